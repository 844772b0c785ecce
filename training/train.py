"""`train(config)`: data → model → Trainer → `<out>/best/` in the thesis layout. The CLI is __main__.py."""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from export.config import load_backbone_config
from training.augment import train_transform
from training.checkpoint import BACKBONE_WEIGHTS
from training.config import TrainConfig, TrainConfigError
from training.data import check_tasks, load_sources, log_summary
from training.model import build_training_model, count_parameters
from training.samplers import make_sampler
from training.trainer import Trainer, TrainState

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def export_command(config: TrainConfig, best: Path, writes_backbone: bool) -> str:
    """How to turn `<out>/best` into an ONNX model (printed and stored in training.json)."""
    parts = ["python -m export", f"--backbone {config.model.backbone}"]
    if writes_backbone:
        parts.append(f"--weights {best / BACKBONE_WEIGHTS}")
    elif config.model.weights is not None:
        parts.append(f"--weights {config.model.weights}")
    if config.recipe in ("linear_probe", "partial"):
        parts.append(f"--heads {best / 'custom_layers.pt'}")
    else:
        parts.append(f"--adapters {best}")
    if config.data.crop_margin:  # the runtime must cut faces as training did (the margin lives in the metadata)
        parts.append(f"--crop-margin {config.data.crop_margin}")
    return " ".join(parts + [f"--out {Path(config.run.out) / 'model.onnx'}"])


def make_loaders(config: TrainConfig, image_size: int) -> tuple[DataLoader, DataLoader | None]:
    data, run = config.data, config.run
    if not data.train:
        raise TrainConfigError("data.train: no training CSVs given (a list of {csv, root, kind})")
    cache = Path(data.cache_dir or Path(run.out) / "crop_cache")
    train_set = load_sources(data.train, image_size, data.crop_margin, cache, train_transform(config.augment))
    check_tasks(train_set.table, data.tasks, "training data")
    log_summary("train", train_set)
    if len(train_set) < run.batch_size:
        raise TrainConfigError(f"run.batch_size {run.batch_size} is larger than the {len(train_set)} training faces")
    generator = torch.Generator().manual_seed(run.seed)
    sampler = make_sampler(train_set.table.labels, data.tasks, config.sampling.task_balance,
                           config.sampling.class_balance, config.sampling.emotion_share, generator)
    # drop_last: a last batch of one face would break the heads' BatchNorm
    train_loader = DataLoader(train_set, batch_size=run.batch_size, sampler=sampler, num_workers=data.workers,
                              drop_last=True, pin_memory=torch.cuda.is_available())
    val_loader = None
    if data.val:
        val_set = load_sources(data.val, image_size, data.crop_margin, cache)
        log_summary("val", val_set)
        val_loader = DataLoader(val_set, batch_size=run.batch_size, shuffle=False, num_workers=data.workers)
    else:
        log.warning("no validation CSVs: the plateau schedule and early stopping follow the training loss")
    return train_loader, val_loader


def train(config: TrainConfig, resume: bool = False) -> tuple[Path, TrainState]:
    """Train; returns (`<out>/best`, final state)."""
    seed_everything(config.run.seed)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    backbone_config = load_backbone_config(config.model.backbone)
    train_loader, val_loader = make_loaders(config, backbone_config.image_size)
    model = build_training_model(config, backbone_config)
    trainable, total = count_parameters(model)
    log.info("%s on %s: %d of %d parameters trainable (%.2f%%)", config.recipe, backbone_config.name, trainable,
             total, 100 * trainable / total)
    best = Path(config.run.out) / "best"
    writes_backbone = config.recipe == "partial" or config.model.weights == "random"
    summary = {"recipe": config.recipe, "backbone": backbone_config.name, "tasks": config.data.tasks,
               "base_weights": config.model.weights, "writes_backbone": writes_backbone,
               "export_command": export_command(config, best, writes_backbone), "config": config.to_dict()}
    trainer = Trainer(config, model, train_loader, val_loader, summary)
    state = trainer.fit(resume=resume)
    return best, state
