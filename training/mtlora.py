"""The trainable MTLoRA model, built from export/mtlora.py's modules (one definition).

Blocks 0..depth-2 get PEFT DoRA (the shared, task-agnostic adapter); the last block and the attention
pool become export's `MTLoRABlock` / `MTLoRAAttentionPool` holding the pretrained weights frozen and
fresh task LoRAs; heads read each task's pooled vector without `proj` (width-d). The model is export's
`MTLoRAFaceAttributeModel` over an `MTLoRATower` whose pools stay unmerged so their LoRAs train; export
rebuilds the same tower from the checkpoint with merged pools, so both compute the same function.
"""
from __future__ import annotations

from torch import nn

from export.config import BackboneConfig
from export.heads import make_heads
from export.mtlora import MTLoRAAttentionPool, MTLoRABlock, MTLoRAFaceAttributeModel, MTLoRATower
from training.config import TrainConfig


def build_mtlora_model(config: TrainConfig, backbone_config: BackboneConfig, backbone: nn.Module,
                       random_weights: bool = False) -> MTLoRAFaceAttributeModel:
    from training.model import add_adapters

    tasks, adapter = list(config.data.tasks), config.adapter
    block = MTLoRABlock.from_timm(backbone.blocks[-1], adapter.rank, tasks)
    pool = MTLoRAAttentionPool.from_timm(backbone.attn_pool, adapter.rank, tasks)
    tower = MTLoRATower(backbone, block, pool)  # drops the last block, the pool and proj from the trunk
    tower.post_norm.requires_grad_(False)       # ln_post: shared and frozen
    tower.trunk = add_adapters(tower.trunk, "dora", adapter.rank, adapter.alpha, adapter.dropout)
    hidden = backbone_config.head_hidden if config.model.deep_head else None
    heads = make_heads(backbone_config.width, tasks, hidden)
    return MTLoRAFaceAttributeModel(backbone_config, tower, heads, adapter="mtlora", random_weights=random_weights)


def is_mtlora(model: nn.Module) -> bool:
    return isinstance(model.backbone, MTLoRATower)


def custom_layers(model: MTLoRAFaceAttributeModel) -> dict[str, dict]:
    """`custom_layers.pt`'s `mtl_layer` and `mtl_attn_pool` (thesis key names, export reads them back)."""
    return {"mtl_layer": model.backbone.block.state_dict(), "mtl_attn_pool": model.backbone.pools.state_dict()}
