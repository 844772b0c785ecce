"""Task-balanced and class-balanced sampling (thesis `TaskBalanceDataset` + WeightedRandomSampler).

- task balance: when Emotion is one of ≥2 trained tasks, emotion-labelled rows are repeated until they
  are `share` of the epoch (the thesis: 33.4 %), because emotion data sets are much smaller;
- class balance: per-sample weight = mean over the sample's labelled (trained) tasks of the class weight
  N_valid / (K · n_class), normalised to mean 1, drawn with replacement, one epoch = len(indices).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from export.heads import NUM_CLASSES, THESIS_TASKS
from training.data import MISSING


def task_balanced_indices(labels: np.ndarray, tasks: list[str], share: float = 0.334) -> np.ndarray:
    """Row indices, with emotion-labelled rows repeated until they are `share` of the result."""
    indices = np.arange(len(labels))
    if "Emotion" not in tasks or len(tasks) < 2:
        return indices
    emotion = indices[labels[:, THESIS_TASKS.index("Emotion")] != MISSING]
    others = len(indices) - len(emotion)
    if len(emotion) == 0 or len(emotion) >= share * len(indices):
        return indices
    # e / (e + others) = share  →  e = share · others / (1 − share)
    wanted = int(np.ceil(share * others / (1 - share)))
    extra = np.resize(emotion, wanted - len(emotion))  # whole copies first, then a prefix
    return np.concatenate([indices, extra])


def class_balance_weights(labels: np.ndarray, tasks: list[str]) -> np.ndarray:
    """One weight per row: mean of its valid labels' class weights, normalised to mean 1."""
    total = np.zeros(len(labels))
    count = np.zeros(len(labels))
    for task in tasks:
        column = labels[:, THESIS_TASKS.index(task)]
        valid = column != MISSING
        if not valid.any():
            continue
        per_class = np.bincount(column[valid], minlength=NUM_CLASSES[task]).astype(float)
        class_weight = np.divide(valid.sum(), NUM_CLASSES[task] * per_class, out=np.zeros_like(per_class),
                                 where=per_class > 0)
        total[valid] += class_weight[column[valid]]
        count[valid] += 1
    weights = np.divide(total, count, out=np.ones(len(labels)), where=count > 0)
    return weights / weights.mean()


class IndexedWeightedSampler(torch.utils.data.Sampler):
    """Draws `len(indices)` rows per epoch from `indices` (repeats allowed) with the given weights."""

    def __init__(self, indices: np.ndarray, weights: np.ndarray | None, generator: torch.Generator):
        self.indices = torch.as_tensor(indices)
        self.inner = WeightedRandomSampler(torch.as_tensor(weights if weights is not None else np.ones(len(indices))),
                                           num_samples=len(indices), replacement=True, generator=generator)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return (int(self.indices[i]) for i in self.inner)


def make_sampler(labels: np.ndarray, tasks: list[str], task_balance: bool, class_balance: bool, share: float,
                 generator: torch.Generator) -> torch.utils.data.Sampler:
    indices = task_balanced_indices(labels, tasks, share) if task_balance else np.arange(len(labels))
    weights = class_balance_weights(labels[indices], tasks) if class_balance else None
    return IndexedWeightedSampler(indices, weights, generator)
