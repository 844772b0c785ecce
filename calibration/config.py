"""Calibration settings as data: dataclasses with defaults, filled from `configs/calibration.yaml`.

Unknown keys and wrong types are errors naming the key. The YAML file documents what each choice
does and what was measured; the defaults here equal the file's values.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from calibration.errors import CalibrationError

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
    if path is None:
        return CalibrationConfig()
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration config {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise CalibrationError(f"{path} is not valid YAML ({error})") from None
    if not isinstance(raw, dict):
        raise CalibrationError(f"{path}: expected a mapping with sections int8, temperature")
    unknown = set(raw) - {"int8", "temperature"}
    if unknown:
        raise CalibrationError(f"{path}: unknown section(s) {sorted(unknown)} (known: int8, temperature)")
    config = CalibrationConfig(int8=_section(Int8Config, raw.get("int8"), f"{path}: int8"),
                               temperature=_section(TemperatureConfig, raw.get("temperature"), f"{path}: temperature"))
    if config.int8.calibrator not in CALIBRATORS:
        raise CalibrationError(f"{path}: int8.calibrator {config.int8.calibrator!r} is not one of {CALIBRATORS}")
    return config


def _section(cls, values, where: str):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise CalibrationError(f"{where}: expected a mapping, got {type(values).__name__}")
    defaults = cls()
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            raise CalibrationError(f"{where}.{key}: unknown key (known: {sorted(fields)})")
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise CalibrationError(f"{where}.{key}: expected {expected.__name__}, got {value!r}")
    return dataclasses.replace(defaults, **{k: (float(v) if isinstance(getattr(defaults, k), float) else v)
                                            for k, v in values.items()})
