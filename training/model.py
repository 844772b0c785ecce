"""The training model: export/'s FaceAttributeModel (one PE-Core definition) set up for a recipe.

- linear_probe: frozen backbone, heads without BatchNorm (the thesis' `--lp`);
- partial: the last N blocks + the attention pool train fully, the rest is frozen;
- lora / dora / loraplus: PEFT LoRA or DoRA on every Linear the thesis adapts (export/names.py), in timm
  naming; the checkpoint writer renames them to Meta's names.
- mtlora: export/mtlora.py's modules, assembled in training/mtlora.py.

Difference from the thesis because of timm: timm's attention pool calls its
`proj` Linear, so an adapter there trains; the thesis' nn.MultiheadAttention read `out_proj.weight`
directly, so its adapter there got no gradient. Export merges every adapter either way, so the exported
model computes what this training model computes in eval mode.
"""
from __future__ import annotations

import logging

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from export.build import pretrained_backbone
from export.config import BackboneConfig
from export.heads import make_heads
from export.model import FaceAttributeModel, create_backbone
from export.names import timm_to_meta_module
from export.weights import load_backbone_weights
from training.config import TrainConfig

log = logging.getLogger(__name__)
TRAIN_WEIGHTS_HINT = ("set model.weights to a PE-Core file (Meta's .pt or timm's layout), e.g. --set "
                      "model.weights=FILE, or model.weights=random for a smoke run")


def base_backbone(config: BackboneConfig, weights: str | None) -> nn.Module:
    """PE-Core with its pretrained weights: a file (Meta or timm layout), timm's hub weights, or random."""
    if weights == "random":
        log.warning("backbone has RANDOM weights: for throughput and plumbing only")
        return create_backbone(config)
    if weights is None:
        return pretrained_backbone(config, TRAIN_WEIGHTS_HINT)
    backbone = create_backbone(config)
    load_backbone_weights(backbone, weights)
    return backbone


def adaptable_modules(backbone: nn.Module) -> list[str]:
    """timm names of the Linears the thesis adapts: every block's qkv/proj/fc1/fc2 and the pool's proj/fc1/fc2."""
    names = []
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Linear):
            try:
                timm_to_meta_module(name)
            except KeyError:
                continue
            names.append(name)
    return names


def add_adapters(backbone: nn.Module, kind: str, rank: int, alpha: float, dropout: float,
                 modules: list[str] | None = None) -> nn.Module:
    """PEFT-wrapped backbone; only adapter weights are trainable (PEFT freezes the rest)."""
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, use_dora=kind == "dora", bias="none",
                        target_modules=modules or adaptable_modules(backbone))
    return get_peft_model(backbone, config)


def freeze_except_last_blocks(backbone: nn.Module, unfreeze_blocks: int) -> None:
    depth = len(backbone.blocks)
    first = max(0, depth - unfreeze_blocks)
    for name, parameter in backbone.named_parameters():
        in_block = name.startswith("blocks.") and int(name.split(".")[1]) >= first
        parameter.requires_grad_(in_block or name.startswith("attn_pool."))


def build_training_model(config: TrainConfig, backbone_config: BackboneConfig) -> nn.Module:
    backbone = base_backbone(backbone_config, config.model.weights)
    if config.model.grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    recipe = config.recipe
    if recipe == "mtlora":
        from training.mtlora import build_mtlora_model
        return build_mtlora_model(config, backbone_config, backbone, random_weights=config.model.weights == "random")
    hidden = backbone_config.head_hidden if config.model.deep_head else None
    heads = make_heads(backbone_config.proj_dim, config.data.tasks, hidden, batch_norm=recipe != "linear_probe")
    adapter = "none"
    if recipe in ("linear_probe", "partial"):
        freeze_except_last_blocks(backbone, config.optim.unfreeze_blocks if recipe == "partial" else 0)
        if recipe == "linear_probe":
            for parameter in backbone.parameters():
                parameter.requires_grad_(False)
    else:
        adapter = config.adapter.kind
        backbone = add_adapters(backbone, adapter, config.adapter.rank, config.adapter.alpha, config.adapter.dropout)
    return FaceAttributeModel(backbone_config, backbone, heads, adapter=adapter,
                              random_weights=config.model.weights == "random")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def task_logits(model: nn.Module, images: torch.Tensor, tasks: list[str]) -> dict[str, torch.Tensor]:
    """{task: logits} in the model's head order (Age, Gender, Emotion ∩ trained tasks)."""
    return dict(zip(tasks, model(images)))
