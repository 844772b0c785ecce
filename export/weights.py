"""Read checkpoint files safely and load PE-Core backbone weights in Meta's or timm's layout.

Meta → timm key conversion is timm's own `checkpoint_filter_fn`. The thesis' migrated
`attn.in_proj.weight` naming is renamed here first, because timm's swap only knows `in_proj_weight`.
A file made at another grid gets its position embedding resampled the way Meta's PE does it (bilinear).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models.eva import checkpoint_filter_fn
from torch import nn

from export.errors import CheckpointError
from facecue.progress import Progress

log = logging.getLogger(__name__)

RANDOM_MARKER_KEY = "facecue_random_weights"  # set by export.random_checkpoint in every file it writes


def read_checkpoint(path: str | Path) -> dict:
    """A `.safetensors` file, or a torch pickle loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors, pickle and zip errors share no base class
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None


def _unwrap(state: dict) -> dict:
    for key in ("model", "state_dict", "module"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def _meta_to_timm(state: dict, backbone: nn.Module, origin: str) -> dict:
    prefix = "visual." if "visual.conv1.weight" in state else ""
    if prefix:
        skipped = sorted(k for k in state if not k.startswith(prefix))
        if skipped:
            shown = ", ".join(skipped[:4]) + (", …" if len(skipped) > 4 else "")
            log.info("%s: skipped %d keys outside the vision tower (text tower, logit_scale: %s)",
                     origin, len(skipped), shown)
        state = {k: v for k, v in state.items() if k.startswith(prefix)}
    # The thesis' migrated layout keeps the fused qkv as an nn.Linear: `attn.in_proj.weight`.
    state = {k.replace("attn.in_proj.weight", "attn.in_proj_weight").replace("attn.in_proj.bias", "attn.in_proj_bias"): v
             for k, v in state.items()}
    return checkpoint_filter_fn(state, backbone)


def resample_pos_embed(state: dict, backbone: nn.Module, origin: str) -> dict:
    """At a grid other than the file's, interpolate `pos_embed` as Meta's PE does (bilinear,
    align_corners=False, no antialias, CLS entry kept); timm's own loader would use bicubic with antialias."""
    have, want = state.get("pos_embed"), backbone.pos_embed
    if have is None or want is None or have.ndim != 3 or have.shape[1] == want.shape[1] or have.shape[2] != want.shape[2]:
        return state  # nothing to do, or a size mismatch reported by the shape check
    old, new = math.isqrt(have.shape[1] - 1), math.isqrt(want.shape[1] - 1)
    if old * old != have.shape[1] - 1 or new * new != want.shape[1] - 1:
        return state
    log.info("%s: position embedding %dx%d → %dx%d grid (bilinear, as Meta's PE)", origin, old, old, new, new)
    grid = have[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(new, new), mode="bilinear", align_corners=False, antialias=False)
    return state | {"pos_embed": torch.cat([have[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> bool:
    """Load a Meta-layout (whole CLIP or vision-only) or timm-layout file; returns its random-weights flag."""
    origin = str(path)
    with Progress(f"loading backbone weights from {origin}", log, unit=None):  # seconds for L14's 2.7 GB file
        state = _unwrap(read_checkpoint(path))
    random_weights = bool(state.pop(RANDOM_MARKER_KEY, torch.tensor(0)).item())
    if "visual.conv1.weight" in state or "conv1.weight" in state:
        state = _meta_to_timm(state, backbone, origin)
    elif "patch_embed.proj.weight" not in state:
        raise CheckpointError(
            f"{origin}: not PE-Core weights (no 'visual.conv1.weight', 'conv1.weight' or 'patch_embed.proj.weight')"
        )
    state = resample_pos_embed(state, backbone, origin)
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unknown = sorted(set(state) - set(expected))
    if missing or unknown:
        raise CheckpointError(f"{origin}: vision-tower keys do not match the backbone: "
                              f"missing {missing[:8]}{'…' if len(missing) > 8 else ''}, "
                              f"unknown {unknown[:8]}{'…' if len(unknown) > 8 else ''}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise CheckpointError(f"{origin}: weights for a different backbone size: {wrong[:4]}")
    backbone.load_state_dict(state, strict=True)
    return random_weights
