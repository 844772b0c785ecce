"""`python -m calibration int8 --engine nncf`: NNCF post-training quantization of the FP32 model for OpenVINO.

FP32 facecue ONNX → OpenVINO model → `nncf.quantize` (transformer preset: `ModelType.TRANSFORMER`, which keeps
LayerNorm, Softmax and residual Adds in float and quantizes the MatMuls, attention scores included; SmoothQuant
with `int8.nncf_smooth_quant_alpha` moves activation outliers of the linear layers into their weights; a
negative alpha turns SmoothQuant off) → an OpenVINO IR `M.nncf.xml` + `.bin`, which runtime/backends/openvino.py
loads (`classifier.backend: openvino` or `auto`). The facecue document rides in the IR's rt_info
(`framework.facecue`, where OpenVINO's ONNX reader puts the ONNX metadata), with `precision: int8-nncf` and a
`quantization` entry; nothing else of it changes.

The report compares the IR with the FP32 model, both on OpenVINO (FP32 in f32, the IR with its float layers
in the CPU's auto precision), on held-out crops distinct from the calibration crops, and times both. The
staging and atomic publication follow calibration/int8_model.py (nothing is left behind on failure).
API: NNCF's post-training quantization documentation (openvinotoolkit/nncf, docs "Post-training Quantization").
"""
from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path

import numpy as np

from calibration.compare import Speed, agreement
from calibration.config import Int8Config
from calibration.errors import CalibrationError
from calibration.int8_model import split_crops
from calibration.modelfile import model_info, read_header, require_float, staging_dir
from calibration.report import Int8Report, write_report
from facecue import interrupts
from facecue.progress import Progress, progress

log = logging.getLogger(__name__)
PRECISION = "int8-nncf"
DOCUMENT_PATH = ["framework", "facecue"]


def output_paths(out: Path) -> tuple[Path, Path]:
    """The weights and the report beside `out` (`m.nncf.xml` → `m.nncf.bin`, `m.nncf.report.json`)."""
    return out.with_suffix(".bin"), out.with_name(out.stem + ".report.json")


def quantize(model_path: Path, calibration: np.ndarray, config: Int8Config):
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    model = ov.Core().read_model(str(model_path))
    batches = [calibration[i:i + 1] for i in range(len(calibration))]
    alpha = config.nncf_smooth_quant_alpha
    advanced = AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha))
    return nncf.quantize(model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                         preset=nncf.QuantizationPreset.MIXED if not config.symmetric_activations
                         else nncf.QuantizationPreset.PERFORMANCE,
                         subset_size=len(batches), advanced_parameters=advanced)


def make_nncf_model(model_path: Path, out_path: Path, crops: np.ndarray, config: Int8Config) -> Int8Report:
    import openvino as ov

    if out_path.suffix != ".xml":
        raise CalibrationError(f"--out {out_path}: the NNCF model is an OpenVINO IR; give a name ending in .xml")
    header = read_header(model_path)
    info = model_info(header, str(model_path))
    require_float(header, info, str(model_path))
    del header
    calibration, held_out = split_crops(crops, config)
    log.info("NNCF INT8: %d calibration crops, %d held out, SmoothQuant alpha %s", len(calibration), len(held_out),
             config.nncf_smooth_quant_alpha)
    weights_path, report_path = output_paths(out_path)
    with staging_dir(out_path) as tmp:
        with Progress("NNCF: quantizing", log, unit=None):
            quantized = quantize(model_path, calibration, config)
        fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
        document = dict(info.document, precision=PRECISION,
                        quantization={"engine": "nncf", "preset": "transformer",
                                      "smooth_quant_alpha": config.nncf_smooth_quant_alpha,
                                      "calibration_crops": int(len(calibration))})
        quantized.set_rt_info(json.dumps(document), DOCUMENT_PATH)
        staged = tmp / out_path.name
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        del quantized
        report = compare(model_path, staged, info, calibration, held_out, config)
        report.model, report.quantized_nodes = out_path.name, fake_quantize
        write_report(report, tmp / report_path.name)
        interrupts.check()
        (tmp / report_path.name).replace(report_path)
        (tmp / weights_path.name).replace(weights_path)  # the weights before the graph that names them
        staged.replace(out_path)
    return report


def _backend(path: Path, precision: str):
    from runtime.backends.openvino import OpenVinoBackend
    from runtime.config import ClassifierConfig

    return OpenVinoBackend(path, ClassifierConfig(backend="openvino", precision=precision, openvino_cache_dir=""))


def _run(backend, crops: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {}
    for start in range(0, len(crops), batch):
        for task, values in backend.run(crops[start:start + batch]).items():
            parts.setdefault(task, []).append(values)
    return {task: np.concatenate(values) for task, values in parts.items()}


def compare(fp32_path: Path, int8_path: Path, info, calibration, held_out, config: Int8Config) -> Int8Report:
    fp32, int8 = _backend(fp32_path, "f32"), _backend(int8_path, "auto")
    with Progress("INT8 against FP32 on the held-out crops", log, unit=None):
        want, got = _run(fp32, held_out), _run(int8, held_out)
    rows = [agreement(task, got[task], want[task], config.margin_tolerance) for task in info.task_names]
    speed = []
    for batch in progress(config.speed_batches, "timing FP32 and INT8", log, unit="batch sizes"):
        images = np.ascontiguousarray(np.resize(held_out, (batch, *held_out.shape[1:])))
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        for backend in (fp32, int8):
            backend.run(images)
        for _ in range(config.speed_repeats):  # interleaved, like calibration/compare.py
            for name, backend in (("fp32", fp32), ("int8", int8)):
                start = time.perf_counter()
                backend.run(images)
                times[name].append(time.perf_counter() - start)
        speed.append(Speed(batch, batch / float(np.median(times["fp32"])), batch / float(np.median(times["int8"]))))
    return Int8Report(model=int8_path.name, fp32_model=f"{fp32_path.name} (OpenVINO f32)",
                      calibrator=f"nncf transformer, SmoothQuant alpha {config.nncf_smooth_quant_alpha}",
                      calibration_crops=len(calibration), held_out_crops=len(held_out), quantized_nodes=0,
                      kept_float={}, agreement=rows, speed=speed,
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      min_agreement=config.min_agreement, random_weights=info.random_weights)
