"""Training recipes are data: `configs/train/<recipe>.yaml` → one small `TrainConfig` of nested dataclasses.

Defaults are the thesis'; a recipe file states only what differs. `--set section.key=value`
overrides single keys (parsed as YAML). Unknown keys and wrong types are errors that name the key
(the loading is runtime/configfile.py, shared with the pipeline and calibration configs).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from runtime import configfile

RECIPES = ("linear_probe", "partial", "lora", "dora", "loraplus", "mtlora")
RECIPE_ADAPTERS = {"linear_probe": ("none",), "partial": ("none",), "lora": ("lora",), "dora": ("dora",),
                   "loraplus": ("dora", "lora"), "mtlora": ("mtlora",)}  # LoRA+ is a learning-rate rule on either


class TrainConfigError(ValueError):
    """A training config is missing, malformed, or names an unknown key."""


@dataclass
class DataSource:
    csv: str                    # label CSV in any layout runtime/labels.py reads (thesis, path,task,label, named)
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


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The thesis defaults, then the recipe file at `path`, then `section.key=value` overrides."""
    return configfile.load(TrainConfig, path, overrides, error=TrainConfigError, what="training config",
                           validate=check_config)


def check_config(config: TrainConfig, origin: str = "config") -> None:
    """Value checks that types alone do not catch."""
    from export.heads import THESIS_TASKS

    if config.recipe not in RECIPES:
        raise TrainConfigError(f"{origin}: recipe: {config.recipe!r} is not one of {RECIPES}")
    if config.adapter.kind not in ("none", "lora", "dora", "mtlora"):
        raise TrainConfigError(f"{origin}: adapter.kind: {config.adapter.kind!r} is not none, lora, dora or mtlora")
    if config.adapter.kind not in RECIPE_ADAPTERS[config.recipe]:
        # the model is built from both keys; a mismatch (e.g. --set recipe=dora on lora.yaml) would train
        # something other than what the recipe name and training.json say
        raise TrainConfigError(f"{origin}: recipe {config.recipe!r} takes adapter.kind "
                               f"{' or '.join(RECIPE_ADAPTERS[config.recipe])}, not {config.adapter.kind!r}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", config.run.device):
        raise TrainConfigError(f"{origin}: run.device: {config.run.device!r} is not auto, cpu, cuda or cuda:N")
    bad = [t for t in config.data.tasks if t not in THESIS_TASKS]
    if bad or not config.data.tasks:
        raise TrainConfigError(f"{origin}: data.tasks: {config.data.tasks} must be a non-empty subset of "
                               f"{list(THESIS_TASKS)}")
    for source in config.data.train + config.data.val:
        if source.kind not in ("crops", "images"):
            raise TrainConfigError(f"{origin}: data source {source.csv}: kind {source.kind!r} is not 'crops' or 'images'")
    if config.run.precision not in ("auto", "fp32", "fp16", "bf16"):
        raise TrainConfigError(f"{origin}: run.precision: {config.run.precision!r} is not auto, fp32, fp16 or bf16")
