"""INT8 post-training quantization with ONNX Runtime's tools: calibrate, quantize to QDQ, write the TRT table.

1. `calibrate_ranges`: one of onnxruntime's calibrators (entropy, percentile, min-max) sees only the
   activations that will be quantized (not every float tensor, its default), and the crops arrive in
   chunks of `chunk_size`: the histogram calibrators keep every intermediate output of one
   `collect_data` call in memory, and merge histograms across calls.
2. `quantize_qdq`: `quantize_static` (QDQ format) from those ranges (through its calibration cache, so
   the data is not run twice), symmetric INT8 weights and activations (zero point 0, as TensorRT's
   explicit quantization needs), Q/DQ on the inputs of the planned nodes only.
3. `write_trt_table`: the same ranges as onnxruntime's calibration table (`write_calibration_table`)
   for the FP32 model, read by ORT's TensorRT provider with `trt_int8_use_native_calibration_table=False`.
   It is not TensorRT's native calibration cache.
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import (EntropyCalibrater, MinMaxCalibrater, PercentileCalibrater,
                                                TensorsData, save_tensors_data)
from onnxruntime.quantization.quant_utils import write_calibration_table

from calibration.config import Int8Config
from calibration.graph import QuantizationPlan
from facecue.progress import Progress

log = logging.getLogger(__name__)

METHODS = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
           "minmax": CalibrationMethod.MinMax}
TABLE_FILES = ("calibration.flatbuffers", "calibration.json")  # what ORT's TensorRT provider reads


class ChunkReader(CalibrationDataReader):
    """Feeds one chunk of crops to a calibrator, one batch per `get_next`."""

    def __init__(self, input_name: str, crops: np.ndarray, batch: int):
        self.batches = iter([{input_name: crops[i:i + batch]} for i in range(0, len(crops), batch)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def _only(calibrator_class, tensors: set[str]):
    """The onnxruntime calibrator class, restricted to `tensors` (it would otherwise record every
    input and output of every MatMul/Gemm, attention scores included)."""

    class Restricted(calibrator_class):
        def select_tensors_to_calibrate(self, model):
            selected, value_infos = super().select_tensors_to_calibrate(model)
            return selected & tensors, value_infos

    return Restricted


def make_calibrator(model_path: Path, plan: QuantizationPlan, config: Int8Config, workdir: Path):
    augmented = str(workdir / "augmented.onnx")
    tensors = set(plan.activations)
    symmetric = config.symmetric_activations
    if config.calibrator == "entropy":
        calibrator = _only(EntropyCalibrater, tensors)(model_path, config.op_types, augmented, symmetric=symmetric)
    elif config.calibrator == "percentile":
        calibrator = _only(PercentileCalibrater, tensors)(model_path, config.op_types, augmented,
                                                          symmetric=symmetric, percentile=config.percentile)
    else:
        calibrator = _only(MinMaxCalibrater, tensors)(model_path, config.op_types, augmented, symmetric=symmetric)
    calibrator.augment_graph()
    # The augmented ModelProto (a full copy of the weights) is on disk now and the calibrators never read
    # it again (the session loads the file): dropping it saves one model size of memory while calibrating.
    calibrator.model = None
    calibrator.create_inference_session()
    return calibrator


def chunks(crops: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(crops), size):
        yield crops[start:start + size]


def calibrate_ranges(model_path: Path, input_name: str, crops: np.ndarray, plan: QuantizationPlan,
                     config: Int8Config, workdir: Path) -> TensorsData:
    with Progress("INT8: preparing the calibration model", log, unit=None):
        calibrator = make_calibrator(model_path, plan, config, workdir)
    with Progress("INT8: calibrating", log, total=len(crops), unit="crops") as bar:
        for chunk in chunks(crops, config.chunk_size):
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print a line per call
                calibrator.collect_data(ChunkReader(input_name, chunk, config.chunk_size))
            bar.update(len(chunk))
    with Progress("INT8: computing the ranges", log, unit=None), contextlib.redirect_stdout(io.StringIO()):
        ranges = calibrator.compute_data()
    missing = set(plan.activations) - set(ranges.keys())
    if missing:
        raise RuntimeError(f"the calibrator returned no range for {sorted(missing)[:5]}")
    return ranges


def quantize_qdq(model_path: Path, out_path: Path, plan: QuantizationPlan, ranges: TensorsData,
                 config: Int8Config, workdir: Path, external_data: bool) -> None:
    cache = workdir / "ranges.json"
    save_tensors_data(ranges, cache)
    quantize_static(
        str(model_path), str(out_path), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=config.op_types, nodes_to_quantize=plan.nodes, per_channel=config.per_channel,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=METHODS[config.calibrator],
        use_external_data_format=external_data, calibration_cache_path=str(cache),
        extra_options={"ActivationSymmetric": config.symmetric_activations, "WeightSymmetric": True,
                       # Q/DQ on the inputs only: outputs feed the float bias Add, residual Add and GELU
                       "OpTypesToExcludeOutputQuantization": list(config.op_types)},
    )


def write_trt_table(ranges: TensorsData, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    write_calibration_table(ranges.data, dir=str(folder))
    # write_calibration_table also writes a plain `calibration.cache`; it is not TensorRT's native
    # cache format either, so it is dropped to avoid that confusion.
    (folder / "calibration.cache").unlink(missing_ok=True)
    return [folder / name for name in TABLE_FILES]
