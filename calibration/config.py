"""Calibration settings as data: dataclasses with defaults, filled from `configs/calibration.yaml`.

Unknown keys and wrong types are errors naming the key (runtime/configfile.py). The YAML file documents what each choice
does and what was measured; the defaults here equal the file's values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from calibration.errors import CalibrationError
from runtime import configfile

CALIBRATORS = ("entropy", "percentile", "minmax")


@dataclass
class Int8Config:
    calibrator: str = "entropy"  # one of CALIBRATORS (onnxruntime's CalibrationMethod)
    percentile: float = 99.999  # used by the percentile calibrator only
    op_types: list[str] = field(default_factory=lambda: ["MatMul", "Gemm"])  # only nodes with a weight initializer
    exclude_scopes: list[str] = field(default_factory=lambda: ["backbone.attn_pool", "backbone.head", "heads."])
    exclude_nodes: list[str] = field(default_factory=list)  # ONNX node names kept in float
    per_channel: bool = True  # one weight scale per output channel
    symmetric_activations: bool = True  # zero point 0: what TensorRT's explicit quantization needs
    calibration_crops: int = 128
    held_out_crops: int = 64  # distinct from the calibration crops; used for the agreement report
    min_calibration_crops: int = 16
    min_held_out_crops: int = 8
    chunk_size: int = 4  # crops per calibration run; bounds the intermediate outputs kept in memory
    speed_batches: list[int] = field(default_factory=lambda: [1, 8])
    speed_repeats: int = 5  # timed runs per batch size and model, interleaved; the median is reported
    margin_tolerance: float = 1e-3  # agreement counts samples whose FP32 top-2 margin exceeds this × logit scale
    min_agreement: float = 0.95  # per task; below it the report says FAIL
    nncf_smooth_quant_alpha: float = 0.95  # --engine nncf: SmoothQuant alpha of the MatMuls (< 0: off)


@dataclass
class TemperatureConfig:
    ece_bins: int = 15
    min_labels: int = 8  # per task; fewer cannot fit a temperature
    min_temperature: float = 0.05
    max_temperature: float = 20.0
    batch: int = 16


@dataclass
class CalibrationConfig:
    int8: Int8Config = field(default_factory=Int8Config)
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)


def load_config(path: str | Path | None) -> CalibrationConfig:
    """The defaults, overridden by the YAML file at `path` (None: defaults only)."""
    return configfile.load(CalibrationConfig, path, error=CalibrationError, what="calibration config",
                           validate=_check)


def _check(config: CalibrationConfig, origin: str) -> None:
    if config.int8.calibrator not in CALIBRATORS:
        raise CalibrationError(f"{origin}: int8.calibrator {config.int8.calibrator!r} is not one of {CALIBRATORS}")
