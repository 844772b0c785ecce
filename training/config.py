"""Training recipes are data: `configs/train/<recipe>.yaml` → one small `TrainConfig` of nested dataclasses.

Defaults are the thesis' (reference §8); a recipe file states only what differs. `--set section.key=value`
overrides single keys (parsed as YAML). Unknown keys and wrong types are errors that name the key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RECIPES = ("linear_probe", "partial", "lora", "dora", "loraplus", "mtlora")


class TrainConfigError(ValueError):
    """A training config is missing, malformed, or names an unknown key."""


@dataclass
class DataSource:
    csv: str                    # thesis layout: Path,Gender,Age,Ethnicity,Facial Emotion,Identity
    root: str                   # image paths in the CSV are relative to this folder
    kind: str = "crops"         # "crops": face chips used as they are; "images": photos → detector → crop, cached
    name: str | None = None     # data-set name in reports; default: the CSV's file stem


@dataclass
class DataConfig:
    train: list[DataSource] = field(default_factory=list)
    val: list[DataSource] = field(default_factory=list)
    tasks: list[str] = field(default_factory=lambda: ["Age", "Gender", "Emotion"])
    crop_margin: float = 0.0
    cache_dir: str | None = None  # detector crops of "images" sources; default <out>/crop_cache
    workers: int = 0


@dataclass
class ModelConfig:
    backbone: str = "pe-core-l14-336"   # configs/models/<name>.yaml or a path
    weights: str | None = None          # PE-Core weights file (Meta or timm layout); None: timm pretrained;
                                        # "random": random init (benchmarks and plumbing only)
    deep_head: bool = True
    grad_checkpointing: bool = True


@dataclass
class AdapterConfig:
    kind: str = "dora"          # none | lora | dora | mtlora
    rank: int = 64
    alpha: float = 64
    dropout: float = 0.5


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    backbone_lr_ratio: float = 0.1   # backbone (lora_A, DoRA m, unfrozen blocks) at lr × ratio
    lora_plus_lambda: float = 1.0    # B matrices at lr × ratio × λ (LoRA+; the thesis used 6)
    unfreeze_blocks: int = 0         # partial fine-tune: the last N blocks train fully (+ attn pool + heads)
    uncertainty_weighting: bool = True
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    early_stopping_patience: int = 10


@dataclass
class SamplingConfig:
    task_balance: bool = True        # duplicate emotion rows up to `emotion_share` when emotion is one of ≥2 tasks
    emotion_share: float = 0.334
    class_balance: bool = True       # WeightedRandomSampler with per-sample class weights


@dataclass
class AugmentConfig:
    enabled: bool = True
    hflip: float = 0.5
    color_jitter: float = 0.2        # brightness = contrast = saturation
    rotate_degrees: float = 10.0
    translate: float = 0.05
    scale: tuple[float, float] = (0.9, 1.1)
    erasing_p: float = 0.5
    erasing_scale: tuple[float, float] = (0.02, 0.2)


@dataclass
class RunConfig:
    out: str = "runs/train"
    epochs: int = 20
    batch_size: int = 16
    max_steps_per_epoch: int | None = None  # cap for smoke tests and benchmarks
    device: str = "auto"             # auto | cpu | cuda
    precision: str = "auto"          # auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    seed: int = 42
    log_every: int = 10              # steps between progress lines
    threads: int | None = None       # torch CPU threads; None: torch's default


@dataclass
class TrainConfig:
    recipe: str = "dora"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, data, where: str):
    """A dataclass from a mapping, checking every key and (simply) every type."""
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise TrainConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise TrainConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        hints = _hints(cls)
        values = {name: _build(hints[name], value, f"{where}.{name}" if where else name) for name, value in data.items()}
        try:
            return cls(**values)
        except TypeError as error:
            raise TrainConfigError(f"{where or 'config'}: {error}") from None
    return _check_value(cls, data, where)


def _hints(cls) -> dict:
    import typing
    return typing.get_type_hints(cls)


def _check_value(hint, value, where: str):
    import typing
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        if value is None and type(None) in args:
            return None
        return _check_value(next(a for a in args if a is not type(None)), value, where)
    if origin is list:
        if not isinstance(value, list):
            raise TrainConfigError(f"{where}: expected a list, got {value!r}")
        return [_build(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TrainConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_check_value(a, v, where) for a, v in zip(args, value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise TrainConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def parse_overrides(pairs: list[str]) -> dict:
    """["optim.lr=3e-4", "run.epochs=2"] → nested dict; values parsed as YAML."""
    nested: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise TrainConfigError(f"--set {pair!r}: expected key=value, e.g. optim.lr=3e-4")
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return nested


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise TrainConfigError(f"training config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise TrainConfigError(f"{path}: not valid YAML ({error})") from None
    config = _build(TrainConfig, _merge(data, parse_overrides(list(overrides))), "")
    check_config(config)
    return config


def check_config(config: TrainConfig) -> None:
    from export.heads import THESIS_TASKS

    if config.recipe not in RECIPES:
        raise TrainConfigError(f"recipe: {config.recipe!r} is not one of {RECIPES}")
    if config.adapter.kind not in ("none", "lora", "dora", "mtlora"):
        raise TrainConfigError(f"adapter.kind: {config.adapter.kind!r} is not none, lora, dora or mtlora")
    bad = [t for t in config.data.tasks if t not in THESIS_TASKS]
    if bad or not config.data.tasks:
        raise TrainConfigError(f"data.tasks: {config.data.tasks} must be a non-empty subset of {list(THESIS_TASKS)}")
    for source in config.data.train + config.data.val:
        if source.kind not in ("crops", "images"):
            raise TrainConfigError(f"data source {source.csv}: kind {source.kind!r} is not 'crops' or 'images'")
    if config.run.precision not in ("auto", "fp32", "fp16", "bf16"):
        raise TrainConfigError(f"run.precision: {config.run.precision!r} is not auto, fp32, fp16 or bf16")
