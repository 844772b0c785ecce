"""Build the FaceAttributeModel from a backbone name, base weights, adapters and heads, and describe it.

Order: config → timm backbone → base weights (file or timm pretrained) → merge LoRA/DoRA →
heads (`custom_layers.pt`'s `prediction_layers`, or `--heads FILE`) → eval-mode model.
An MTLoRA checkpoint (`mtl_layer`/`mtl_attn_pool` in `custom_layers.pt`) gets its final block and per-task
pools from export/mtlora.py.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import timm
import torch

from export import mtlora
from export.adapters import CUSTOM_LAYERS, ADAPTER_CONFIG, ADAPTER_WEIGHTS, merge_adapters, read_adapters
from export.config import BackboneConfig, load_backbone_config
from export.errors import CheckpointError
from export.heads import heads_from_state_dict
from export.hub import check_hub_weights
from export.model import FaceAttributeModel, create_backbone
from export.names import block_index
from export.weights import RANDOM_MARKER_KEY, load_backbone_weights, read_checkpoint, resample_pos_embed
from runtime.metadata import build_document

log = logging.getLogger(__name__)

def read_heads(path: str | Path) -> tuple[dict[str, torch.Tensor], bool, dict | None]:
    """`prediction_layers` of a `custom_layers.pt`, or a file laid out like it; plus its random flag and,
    for an MTLoRA checkpoint, its `mtl_layer` / `mtl_attn_pool` state dicts (else None)."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a dict of head weights, got {type(checkpoint).__name__}")
    random_weights = bool(checkpoint.pop(RANDOM_MARKER_KEY, False))
    mtlora_sections = None
    if any(key in checkpoint for key in mtlora.MTLORA_SECTIONS):
        mtlora_sections = mtlora.read_sections(checkpoint, str(path))
    if "prediction_layers" in checkpoint:
        extra = sorted(set(checkpoint) - {"prediction_layers", *mtlora.MTLORA_SECTIONS})
        if extra:
            raise CheckpointError(f"{path}: unknown entries {extra} beside 'prediction_layers'")
        checkpoint = checkpoint["prediction_layers"]
    return dict(checkpoint), random_weights, mtlora_sections


EXPORT_WEIGHTS_HINT = "pass --weights FILE (Meta's PE-Core .pt or timm's layout)"


def pretrained_backbone(config: BackboneConfig, hint: str = EXPORT_WEIGHTS_HINT) -> torch.nn.Module:
    """PE-Core with timm's published weights (hub or Hugging Face cache), or a CheckpointError ending in `hint`
    (the caller's way to give a weights file)."""
    if config.pretrained_name is None:
        raise CheckpointError(f"{config.name} has no published weights: {hint}")
    check_hub_weights(config.pretrained_name, hint)  # fails at once offline, not after the Hub's retries
    log.info("loading timm pretrained weights %s (needs the network or the Hugging Face cache)",
             config.pretrained_name)
    # Built at the published size: at another size timm would resample the position embedding bicubically,
    # so it is resampled here as Meta's PE does (weights.resample_pos_embed).
    native = replace(config, image_size=timm.models.get_pretrained_cfg(config.pretrained_name).input_size[-1])
    try:
        net = create_backbone(native, pretrained=True)
    except Exception as error:  # hub, network and cache errors have no common base class
        raise CheckpointError(f"could not get timm pretrained weights {config.pretrained_name!r} ({type(error).__name__}: "
                              f"{error}); offline? {hint}") from None
    if native.image_size == config.image_size:
        return net
    backbone = create_backbone(config)
    backbone.load_state_dict(resample_pos_embed(net.state_dict(), backbone, config.pretrained_name), strict=True)
    return backbone


def build_model(backbone: str | BackboneConfig, weights: str | Path | None = None,
                adapters: str | Path | None = None, heads: str | Path | None = None) -> FaceAttributeModel:
    """The eval-mode model; heads from `heads`, else from `<adapters>/custom_layers.pt`."""
    config = backbone if isinstance(backbone, BackboneConfig) else load_backbone_config(backbone)
    if adapters is None and heads is None:
        raise CheckpointError("no heads: pass --adapters DIR (with custom_layers.pt) or --heads FILE")
    adapter_set = read_adapters(adapters) if adapters is not None else None  # read first: fail before slow steps
    heads_path = Path(heads) if heads is not None else Path(adapters) / CUSTOM_LAYERS
    head_state, heads_random, mtlora_sections = read_heads(heads_path)
    if mtlora_sections is not None:  # MTLoRA (export/mtlora.py): check tasks and block count before slow steps
        tasks = mtlora.check_layout(config, mtlora_sections, sorted({k.partition(".")[0] for k in head_state}),
                                    {block_index(m) for m in adapter_set.tensors} if adapter_set else set(),
                                    str(heads_path))

    if weights is None:
        net = pretrained_backbone(config)
        weights_random = False
    else:
        net = create_backbone(config)
        weights_random = load_backbone_weights(net, weights)
    if adapter_set is not None:
        net = merge_adapters(net, adapter_set, config.depth)
    # MTLoRA heads read each task's pool output without `proj`
    head_modules = heads_from_state_dict(head_state, config.width if mtlora_sections else config.proj_dim,
                                         str(heads_path))
    random_weights = weights_random or heads_random or bool(adapter_set and adapter_set.random_weights)
    if mtlora_sections is not None:
        net = mtlora.build_tower(config, net, mtlora_sections, tasks, str(heads_path))
        model = mtlora.MTLoRAFaceAttributeModel(config, net, head_modules, adapter="mtlora",
                                                random_weights=random_weights)
    else:
        model = FaceAttributeModel(config, net, head_modules,
                                   adapter=adapter_set.kind if adapter_set else "none", random_weights=random_weights)
    log.info("built %s: tasks %s, adapter %s%s", config.name, model.task_names, model.adapter,
             " (RANDOM WEIGHTS: plumbing only)" if random_weights else "")
    return model.eval()


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_document(model: FaceAttributeModel, weights: str | Path | None = None, adapters: str | Path | None = None,
                   heads: str | Path | None = None, crop_margin: float = 0.0) -> dict:
    """The `facecue` metadata document (design.md), with sha256s of the input files."""
    source: dict = {"weights_sha256": sha256(weights) if weights else f"timm:{model.config.pretrained_name}"}
    files = {}
    if adapters is not None:
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG, CUSTOM_LAYERS):
            if (Path(adapters) / name).is_file() and not (name == CUSTOM_LAYERS and heads is not None):
                files[name] = sha256(Path(adapters) / name)
        source["adapters_sha256"] = files
    if heads is not None:
        source["heads_sha256"] = {Path(heads).name: sha256(heads)}
    return build_document(tasks=model.task_names, input_size=model.config.image_size, backbone=model.config.name,
                          adapter=model.adapter, crop_margin=crop_margin, source=source,
                          random_weights=model.random_weights)
