"""Meta PE module names ↔ timm Eva module names, for the Linears that carry LoRA/DoRA adapters.

The thesis saves adapters under Meta's (patched) PE names; the export attaches
them to timm's Eva. training/ needs the inverse to save checkpoints in the thesis layout.
Backbone *weights* are converted with timm's own `checkpoint_filter_fn` instead (see weights.py).
"""
from __future__ import annotations

import re

# (Meta pattern, timm pattern); `{i}` is a block index.
_MODULE_PAIRS = [
    ("transformer.resblocks.{i}.attn.in_proj", "blocks.{i}.attn.qkv"),  # fused q|k|v rows in both
    ("transformer.resblocks.{i}.attn.out_proj", "blocks.{i}.attn.proj"),
    ("transformer.resblocks.{i}.mlp.c_fc", "blocks.{i}.mlp.fc1"),
    ("transformer.resblocks.{i}.mlp.c_proj", "blocks.{i}.mlp.fc2"),
    ("attn_pool.attn.out_proj", "attn_pool.proj"),
    ("attn_pool.mlp.c_fc", "attn_pool.mlp.fc1"),
    ("attn_pool.mlp.c_proj", "attn_pool.mlp.fc2"),
]


def _regex(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(re.escape("{i}"), r"(?P<i>\d+)") + "$")


_META_TO_TIMM = [(_regex(meta), timm) for meta, timm in _MODULE_PAIRS]
_TIMM_TO_META = [(_regex(timm), meta) for meta, timm in _MODULE_PAIRS]


def _translate(name: str, table: list[tuple[re.Pattern, str]], what: str) -> str:
    for regex, target in table:
        match = regex.match(name)
        if match:
            return target.replace("{i}", match.groupdict().get("i") or "")
    raise KeyError(f"{name!r} is not an adaptable {what} module")


def meta_to_timm_module(name: str) -> str:
    """`transformer.resblocks.3.attn.in_proj` → `blocks.3.attn.qkv`."""
    return _translate(name, _META_TO_TIMM, "Meta PE")


def timm_to_meta_module(name: str) -> str:
    """`blocks.3.attn.qkv` → `transformer.resblocks.3.attn.in_proj` (to save in the thesis layout)."""
    return _translate(name, _TIMM_TO_META, "timm Eva")


def block_index(name: str) -> int | None:
    """The block index of a Meta or timm module name, None for the attention pool."""
    match = re.match(r"^(?:transformer\.resblocks|blocks)\.(\d+)\.", name)
    return int(match.group(1)) if match else None
