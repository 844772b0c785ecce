"""FaceAttributeModel: uint8 face crops → PE-Core (timm Eva) → projected embedding → one head per task.

One PyTorch definition for export (and later training/): preprocessing lives inside the module, so
the ONNX graph takes design.md's uint8 NHWC RGB input and does scaling and normalisation itself.
"""
from __future__ import annotations

import timm
import torch
from torch import nn

from export.config import BackboneConfig


def create_backbone(config: BackboneConfig, pretrained: bool = False) -> nn.Module:
    """timm's Eva built as PE-Core, with positions as in Meta's PE at any grid.

    `head` is a Linear(width, proj_dim) standing in for Meta's `proj`, so `backbone(x)` is the
    projected embedding the DoRA/LoRA heads consume.
    """
    name = config.pretrained_name if pretrained else config.timm_name
    backbone = timm.create_model(
        name,
        pretrained=pretrained,
        num_classes=config.proj_dim,
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.width,
        depth=config.depth,
        num_heads=config.heads,
        mlp_ratio=config.mlp_ratio,
        attn_pool_num_heads=config.pool_heads,
    )
    # timm rescales RoPE positions by ref_feat_shape/grid; Meta keeps integer positions 1..G.
    # create_model drops ref_feat_shape=None, so clear it here and rebuild the cached table.
    backbone.rope.ref_feat_shape = None
    backbone.rope.init_non_persistent_buffers()
    return backbone


class Preprocess(nn.Module):
    """uint8 [N,S,S,3] RGB → float [N,3,S,S] in [-1, 1] (Meta PE: mean = std = 0.5)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 127.5 - 1.0).permute(0, 3, 1, 2)


class FaceAttributeModel(nn.Module):
    """Outputs one logits tensor per task, in the order of `task_names` (age, gender, emotion)."""

    def __init__(self, config: BackboneConfig, backbone: nn.Module, heads: nn.ModuleDict,
                 adapter: str = "none", random_weights: bool = False):
        super().__init__()
        self.config = config
        self.adapter = adapter  # "dora", "lora" or "none": what was merged into the backbone
        self.random_weights = random_weights  # any input made by export.random_checkpoint
        self.preprocess = Preprocess()
        self.backbone = backbone
        self.heads = heads  # keyed Age/Gender/Emotion as in the thesis checkpoints

    @property
    def task_names(self) -> list[str]:
        return [task.lower() for task in self.heads]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feature = self.backbone(self.preprocess(images))
        return tuple(head(feature) for head in self.heads.values())
