"""AdamW parameter groups by name, as the thesis forms them (LoRA+: Hayou et al., arXiv:2402.12354), and the schedule.

| group    | names                                                        | learning rate        |
|----------|--------------------------------------------------------------|----------------------|
| head     | `attn_pool`/`pools` (incl. adapters), `heads`, `log_vars`    | lr                   |
| lora_B   | `lora_B`, `lora_tasks_B`, `lora_shared_B` outside the pool   | lr · ratio · λ       |
| backbone | everything else trainable (lora_A, DoRA m, unfrozen blocks)  | lr · ratio           |

λ = 1 is plain LoRA/DoRA; the thesis trained with λ = 6 (LoRA+). The thesis' head group matched
`prediction_layers`; our heads live in `heads`; MTLoRA's task pools (the thesis'
`mtl_attn_pool`) are export's `MTLoRATower.pools`.
"""
from __future__ import annotations

import torch
from torch import nn

from training.config import OptimConfig

B_MARKERS = ("lora_B", "lora_tasks_B", "lora_shared_B")
HEAD_MARKERS = ("attn_pool", "backbone.pools.", "heads.", "log_vars")


def group_of(name: str) -> str:
    if any(marker in name for marker in HEAD_MARKERS):
        return "head"
    if any(marker in name for marker in B_MARKERS):
        return "lora_B"
    return "backbone"


def parameter_groups(named: list[tuple[str, nn.Parameter]], config: OptimConfig) -> list[dict]:
    rates = {"head": config.lr, "lora_B": config.lr * config.backbone_lr_ratio * config.lora_plus_lambda,
             "backbone": config.lr * config.backbone_lr_ratio}
    groups: dict[str, list] = {name: [] for name in rates}
    for name, parameter in named:
        if parameter.requires_grad:
            groups[group_of(name)].append(parameter)
    return [{"name": g, "params": ps, "lr": rates[g], "weight_decay": config.weight_decay}
            for g, ps in groups.items() if ps]


def make_optimizer(named: list[tuple[str, nn.Parameter]], config: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameter_groups(named, config))


def make_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig):
    """ReduceLROnPlateau on the validation loss; min_lr per group = group lr · 0.1 · 0.09 as in the thesis."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience,
        min_lr=[group["lr"] * 0.1 * 0.09 for group in optimizer.param_groups])
