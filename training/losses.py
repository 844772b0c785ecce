"""Multi-task loss with missing labels and uncertainty weighting.

Per task: CrossEntropy(ignore_index=−100); a task with no valid label in the batch contributes nothing
(not a NaN). Uncertainty weighting (Kendall et al.): L = Σ_t exp(−s_t)·L_t + 0.5·s_t with one learned
s_t per trained task (init 0), trained in the head parameter group.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from training.data import MISSING


class MultiTaskLoss(nn.Module):
    def __init__(self, tasks: list[str], uncertainty_weighting: bool = True):
        super().__init__()
        self.tasks = list(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks)), requires_grad=uncertainty_weighting)
        self.uncertainty_weighting = uncertainty_weighting

    @staticmethod
    def task_losses(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean CE per task over its valid labels; tasks without one in this batch are left out."""
        losses = {}
        for task, output in logits.items():
            target = labels[task]
            if (target != MISSING).any():
                losses[task] = F.cross_entropy(output.float(), target, ignore_index=MISSING)
        return losses

    def forward(self, logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        losses = self.task_losses(logits, labels)
        total = self.log_vars.sum() * 0.0  # a graph-connected zero, also when no task has labels
        for task, loss in losses.items():
            if self.uncertainty_weighting:
                s = self.log_vars[self.tasks.index(task)]
                total = total + torch.exp(-s) * loss + 0.5 * s
            else:
                total = total + loss
        return total, {t: float(v.detach()) for t, v in losses.items()}
