"""The training loop: epochs of AdamW steps, validation, ReduceLROnPlateau, early stopping, checkpoints.

Per epoch: train (autocast where the device supports it, GradScaler for fp16), validate (loss = sum of
per-task mean CE, as the thesis), step the plateau scheduler, write `<out>/best/` (thesis layout, what
export takes) when the validation loss improves, `<out>/last/state.pt` (everything to resume), and
`<out>/history.json` with `<out>/curves.png` (loss and accuracy so far).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from export.heads import THESIS_TASKS
from training.checkpoint import save_state, write_checkpoint
from export.errors import CheckpointError
from facecue.progress import Progress
from training.config import TrainConfig, TrainConfigError
from training.curves import CURVES, save_curves
from training.data import MISSING
from training.losses import MultiTaskLoss

log = logging.getLogger(__name__)


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float
    val_task_loss: dict[str, float]
    val_accuracy: dict[str, float]
    learning_rates: dict[str, float]
    samples_per_second: float


@dataclass
class TrainState:
    epoch: int = 0                 # epochs completed
    best_val_loss: float = float("inf")
    best_epoch: int = 0
    stale_epochs: int = 0          # epochs since the validation loss last improved
    history: list[dict] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainConfigError(f"run.device={name} but torch sees no CUDA device (use run.device=auto or cpu)")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """None = fp32. auto: fp16 on CUDA (the thesis' fp16 + GradScaler), fp32 on CPU."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{seconds:02d}s"


def labels_by_task(labels: torch.Tensor, tasks: list[str]) -> dict[str, torch.Tensor]:
    return {task: labels[:, THESIS_TASKS.index(task)] for task in tasks}


def _numpy_rng_state() -> list:
    """numpy's legacy RNG state as tensors and numbers (weights_only loading accepts no ndarray)."""
    _, keys, position, has_gauss, cached = np.random.get_state()
    return [torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)]


def _set_numpy_rng_state(state: list) -> None:
    keys, position, has_gauss, cached = state
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached))


class Trainer:
    def __init__(self, config: TrainConfig, model: torch.nn.Module, train_loader: DataLoader,
                 val_loader: DataLoader | None, summary: dict):
        from training.optim import make_optimizer, make_scheduler

        self.config, self.tasks, self.summary = config, list(config.data.tasks), summary
        self.device = pick_device(config.run.device)
        self.dtype = autocast_dtype(self.device, config.run.precision)
        self.model = model.to(self.device)
        self.loss = MultiTaskLoss(self.tasks, config.optim.uncertainty_weighting).to(self.device)
        self.train_loader, self.val_loader = train_loader, val_loader
        named = list(self.model.named_parameters()) + [("log_vars", self.loss.log_vars)]
        self.optimizer = make_optimizer(named, config.optim)
        self.scheduler = make_scheduler(self.optimizer, config.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.out = Path(config.run.out)
        self.state = TrainState()

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict]:
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        with self.autocast():
            logits = dict(zip(self.tasks, self.model(images)))
        loss, parts = self.loss(logits, labels_by_task(labels, self.tasks))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach()), parts

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        self.model.train()
        run = self.config.run
        steps = len(self.train_loader) if run.max_steps_per_epoch is None else min(len(self.train_loader), run.max_steps_per_epoch)
        total, seen, start = 0.0, 0, time.perf_counter()
        with Progress(f"epoch {epoch}/{run.epochs}", log, total=steps, unit="steps") as bar:
            for index, (images, labels) in enumerate(self.train_loader, start=1):
                loss, parts = self.step(images, labels)
                total, seen = total + loss, seen + len(images)
                bar.update(note=f"loss {loss:.4f}")
                if index % run.log_every == 0 or index == steps:  # the loss record in the log, with each task's
                    elapsed = time.perf_counter() - start
                    tasks = " ".join(f"{t.lower()} {v:.3f}" for t, v in parts.items())
                    log.info("epoch %d/%d step %d/%d loss %.4f (%s) %.1f samples/s, epoch ends in %s", epoch,
                             run.epochs, index, steps, loss, tasks, seen / elapsed,
                             _duration(elapsed / index * (steps - index)))
                if index >= steps:
                    break
        return total / max(1, steps), seen / (time.perf_counter() - start)

    @torch.no_grad()
    def validate(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """(sum over tasks of mean CE, per-task CE, per-task accuracy) on the validation set."""
        self.model.eval()
        loss_sum = {t: 0.0 for t in self.tasks}
        count = {t: 0 for t in self.tasks}
        correct = {t: 0 for t in self.tasks}
        with Progress("validating", log, total=len(self.val_loader.dataset), unit="faces") as bar:
            for images, labels in self.val_loader:
                with self.autocast():
                    outputs = self.model(images.to(self.device))
                for task, logits in zip(self.tasks, outputs):
                    target = labels[:, THESIS_TASKS.index(task)].to(self.device)
                    valid = target != MISSING
                    if valid.any():
                        loss_sum[task] += float(torch.nn.functional.cross_entropy(logits[valid].float(), target[valid],
                                                                                  reduction="sum"))
                        correct[task] += int((logits[valid].argmax(1) == target[valid]).sum())
                        count[task] += int(valid.sum())
                bar.update(len(images))
        task_loss = {t: loss_sum[t] / count[t] for t in self.tasks if count[t]}
        accuracy = {t: correct[t] / count[t] for t in self.tasks if count[t]}
        return sum(task_loss.values()), task_loss, accuracy

    def fit(self, resume: bool = False) -> TrainState:
        if resume:
            self.load_state(self.out / "last" / "state.pt")
        run, optim = self.config.run, self.config.optim
        for epoch in range(self.state.epoch + 1, run.epochs + 1):
            train_loss, rate = self.train_epoch(epoch)
            if self.val_loader is not None:
                val_loss, task_loss, accuracy = self.validate()
            else:
                val_loss, task_loss, accuracy = train_loss, {}, {}
            self.scheduler.step(val_loss)
            result = EpochResult(epoch, train_loss, val_loss, task_loss, accuracy,
                                 {g["name"]: g["lr"] for g in self.optimizer.param_groups}, rate)
            self.state.history.append(asdict(result))
            self.state.epoch = epoch
            improved = val_loss < self.state.best_val_loss
            if improved:
                self.state.best_val_loss, self.state.best_epoch, self.state.stale_epochs = val_loss, epoch, 0
                write_checkpoint(self.out / "best", self.model, self.summary | self.metrics())
            else:
                self.state.stale_epochs += 1
            log.info("epoch %d: train loss %.4f, val loss %.4f%s, accuracy %s", epoch, train_loss, val_loss,
                     " (best, saved)" if improved else "", {t: round(a, 4) for t, a in accuracy.items()})
            save_state(self.out / "last" / "state.pt", self.resumable_state())
            self.write_history()
            if self.state.stale_epochs >= optim.early_stopping_patience:
                log.info("early stop: no validation-loss improvement in %d epochs", self.state.stale_epochs)
                break
        return self.state

    def write_history(self) -> None:
        """history.json and curves.png after every epoch, each complete under its name (temp file, rename)."""
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / f".history.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self.summary | self.metrics(), indent=2, default=str))
        tmp.replace(self.out / "history.json")
        save_curves(self.state.history, self.out / CURVES)

    def metrics(self) -> dict:
        return {"epochs_run": self.state.epoch, "best_epoch": self.state.best_epoch,
                "best_val_loss": self.state.best_val_loss, "history": self.state.history,
                "uncertainty_log_vars": dict(zip(self.tasks, self.loss.log_vars.detach().cpu().tolist()))}

    # --- resuming -------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()
                if k in trainable or k.endswith(("running_mean", "running_var", "num_batches_tracked"))}

    def resumable_state(self) -> dict:
        sampler = getattr(self.train_loader, "sampler", None)
        generator = getattr(getattr(sampler, "inner", None), "generator", None)
        return {"model": self.trainable_state(), "log_vars": self.loss.log_vars.detach().cpu(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "train_state": asdict(self.state),
                "torch_rng": torch.get_rng_state(), "numpy_rng": _numpy_rng_state(),
                "python_rng": list(random.getstate()[1]),
                "sampler_rng": generator.get_state() if generator is not None else None}

    def load_state(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"cannot resume: {path} not found (no finished epoch in {self.out}?)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or foreign file: pickle and zip errors of many kinds
            raise CheckpointError(f"cannot resume: {path} is not a readable training state ({error})") from None
        missing = set(self.trainable_state()) - set(state.get("model", {}))
        if missing:
            raise CheckpointError(f"cannot resume from {path}: it lacks {sorted(missing)[:4]} (written by another "
                                  "recipe or model? resume with the config that wrote it, or use a new run.out)")
        self.model.load_state_dict(state["model"], strict=False)
        with torch.no_grad():
            self.loss.log_vars.copy_(state["log_vars"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.state = TrainState(**state["train_state"])
        torch.set_rng_state(state["torch_rng"])
        _set_numpy_rng_state(state["numpy_rng"])
        random.setstate((3, tuple(state["python_rng"]), None))
        sampler = getattr(self.train_loader, "sampler", None)
        generator = getattr(getattr(sampler, "inner", None), "generator", None)
        if generator is not None and state["sampler_rng"] is not None:
            generator.set_state(state["sampler_rng"])
        log.info("resumed from %s after epoch %d (best val loss %.4f)", path, self.state.epoch, self.state.best_val_loss)
