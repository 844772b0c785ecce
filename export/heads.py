"""The thesis' classification heads, keyed `Age`, `Gender`, `Emotion`.

Module indices match the thesis so its `prediction_layers` state dict loads with strict=True:
deep head  = 0 BatchNorm1d, 1 Dropout, 2 Linear(D, H), 3 GELU, 4 Linear(H, C);
plain head = 0 BatchNorm1d, 1 Dropout, 2 Linear(D, C).
A head trained as a linear probe has Identity at index 0 (no BatchNorm keys).
"""
from __future__ import annotations

import re

import torch
from torch import nn

from export.errors import CheckpointError

THESIS_TASKS = ("Age", "Gender", "Emotion")  # the order the thesis builds and saves them
NUM_CLASSES = {"Age": 9, "Gender": 2, "Emotion": 7}
DROPOUT_P = 0.5


def make_head(in_dim: int, num_classes: int, hidden: int | None = None, batch_norm: bool = True) -> nn.Sequential:
    """Deep head when `hidden` is given, plain head otherwise."""
    norm = nn.BatchNorm1d(in_dim) if batch_norm else nn.Identity()
    layers = [norm, nn.Dropout(DROPOUT_P)]
    if hidden is None:
        layers.append(nn.Linear(in_dim, num_classes))
    else:
        layers += [nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


def make_heads(in_dim: int, tasks=THESIS_TASKS, hidden: int | None = None, batch_norm: bool = True) -> nn.ModuleDict:
    return nn.ModuleDict({task: make_head(in_dim, NUM_CLASSES[task], hidden, batch_norm) for task in tasks})


def heads_from_state_dict(state: dict[str, torch.Tensor], feature_dim: int, origin: str) -> nn.ModuleDict:
    """Rebuild the heads a `prediction_layers` state dict describes, check them, load them strictly."""
    by_task: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        task, _, rest = key.partition(".")
        if task not in NUM_CLASSES or not re.fullmatch(r"[0-4]\.\w+", rest):
            raise CheckpointError(f"{origin}: unknown head key {key!r} (expected {'/'.join(THESIS_TASKS)}.<index>.*)")
        by_task.setdefault(task, {})[rest] = value
    if not by_task:
        raise CheckpointError(f"{origin}: no task heads found (expected keys like 'Age.2.weight')")

    heads = nn.ModuleDict()
    for task in THESIS_TASKS:  # thesis order, whatever order the file has
        if task not in by_task:
            continue
        keys = by_task[task]
        deep = "4.weight" in keys
        if "2.weight" not in keys:
            raise CheckpointError(f"{origin}: head {task!r} has no Linear weights ('{task}.2.weight' missing)")
        in_dim = keys["2.weight"].shape[1]
        if in_dim != feature_dim:
            raise CheckpointError(
                f"{origin}: head {task!r} expects {in_dim}-d features but this backbone gives {feature_dim}-d "
                "(heads for a different backbone size?)"
            )
        out = keys["4.weight" if deep else "2.weight"]
        if out.shape[0] != NUM_CLASSES[task]:
            raise CheckpointError(f"{origin}: head {task!r} has {out.shape[0]} outputs, expected {NUM_CLASSES[task]}")
        head = make_head(in_dim, NUM_CLASSES[task], keys["2.weight"].shape[0] if deep else None,
                         batch_norm="0.running_mean" in keys)
        try:
            head.load_state_dict(keys, strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"{origin}: head {task!r} does not match the thesis layout: {error}") from None
        heads[task] = head
    return heads
