"""Read a thesis-layout LoRA/DoRA adapter directory and merge it into the timm backbone with PEFT.

The thesis evaluated after PEFT's `merge_and_unload`, so PEFT itself does the
merge here: the adapters are renamed from Meta's module names to timm's (export/names.py), attached
with an equivalent LoraConfig and merged in float32. Merging also applies adapters that PE's
unmerged forward bypasses (the pool's MultiheadAttention out_proj), as the thesis pipeline did.
The fused q|k|v rows are in the same order in Meta's in_proj and timm's qkv, and DoRA's norm is per
output row, so merging on the fused Linear is the thesis' merge.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from torch import nn

from export.errors import CheckpointError
from export.names import block_index, meta_to_timm_module
from export.weights import read_checkpoint
from facecue.progress import Progress

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
CUSTOM_LAYERS = "custom_layers.pt"
RANDOM_MARKER_FILE = "RANDOM_WEIGHTS"  # written by export.random_checkpoint
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_magnitude_vector)$")


@dataclass
class Adapters:
    """An adapter directory, read and checked, with module names already in timm's naming."""
    directory: Path
    rank: int
    alpha: float
    use_dora: bool
    use_rslora: bool
    tensors: dict[str, dict[str, torch.Tensor]]  # timm module → {lora_A.weight, lora_B.weight, [lora_magnitude_vector]}
    random_weights: bool

    @property
    def kind(self) -> str:
        return "dora" if self.use_dora else "lora"


def read_adapter_config(directory: Path) -> dict:
    path = directory / ADAPTER_CONFIG
    if not path.is_file():
        raise CheckpointError(f"{directory}: {ADAPTER_CONFIG} not found (is this a PEFT adapter directory?)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        found = config.get("peft_type") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{path}: not a LoRA/DoRA adapter (peft_type {found!r}, expected 'LORA')")
    if config.get("bias", "none") != "none" or config.get("fan_in_fan_out") or config.get("rank_pattern") \
            or config.get("alpha_pattern"):
        raise CheckpointError(f"{path}: unsupported adapter options (bias must be 'none', no fan_in_fan_out, "
                              "no rank_pattern/alpha_pattern)")
    return config


def read_adapters(directory: str | Path) -> Adapters:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"adapter directory not found: {directory}")
    config = read_adapter_config(directory)
    rank, use_dora = int(config["r"]), bool(config.get("use_dora", False))
    state = read_checkpoint(directory / ADAPTER_WEIGHTS)

    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _KEY.match(key)
        if not match:
            raise CheckpointError(f"{directory / ADAPTER_WEIGHTS}: unknown key {key!r} (not a LoRA/DoRA adapter key)")
        try:
            module = meta_to_timm_module(match["module"])
        except KeyError as error:
            raise CheckpointError(f"{directory / ADAPTER_WEIGHTS}: {error.args[0]}") from None
        tensors.setdefault(module, {})[match["part"]] = value.float()

    for module, parts in tensors.items():
        needed = {"lora_A.weight", "lora_B.weight"} | ({"lora_magnitude_vector"} if use_dora else set())
        if set(parts) != needed:
            raise CheckpointError(f"{directory}: adapter {module} has {sorted(parts)}, expected {sorted(needed)} "
                                  f"(use_dora={use_dora} in {ADAPTER_CONFIG})")
        if parts["lora_A.weight"].shape[0] != rank or parts["lora_B.weight"].shape[1] != rank:
            raise CheckpointError(f"{directory}: rank mismatch in {module}: A {tuple(parts['lora_A.weight'].shape)}, "
                                  f"B {tuple(parts['lora_B.weight'].shape)}, but r={rank} in {ADAPTER_CONFIG}")
    if not tensors:
        raise CheckpointError(f"{directory / ADAPTER_WEIGHTS}: holds no adapter tensors")
    return Adapters(directory, rank, float(config.get("lora_alpha", rank)), use_dora,
                    bool(config.get("use_rslora", False)), tensors, (directory / RANDOM_MARKER_FILE).exists())


def check_adapters_fit(adapters: Adapters, backbone: nn.Module, depth: int) -> None:
    """Adapters for a different depth or width fail here, naming the module."""
    modules = dict(backbone.named_modules())
    for name, parts in adapters.tensors.items():
        index = block_index(name)
        if index is not None and index >= depth:
            raise CheckpointError(f"{adapters.directory}: adapters for block {index} but the backbone has {depth} "
                                  "blocks (adapters for a different backbone depth)")
        linear = modules[name]
        out_dim, in_dim = linear.weight.shape
        a, b = parts["lora_A.weight"], parts["lora_B.weight"]
        if a.shape[1] != in_dim or b.shape[0] != out_dim:
            raise CheckpointError(f"{adapters.directory}: adapter {name} is {a.shape[1]}→{b.shape[0]} but the backbone's "
                                  f"Linear is {in_dim}→{out_dim} (adapters for a different backbone size)")


def merge_adapters(backbone: nn.Module, adapters: Adapters, depth: int) -> nn.Module:
    """Attach the adapters with PEFT, load their weights, and return the merged plain backbone."""
    check_adapters_fit(adapters, backbone, depth)
    config = LoraConfig(r=adapters.rank, lora_alpha=adapters.alpha, use_dora=adapters.use_dora,
                        use_rslora=adapters.use_rslora, target_modules=sorted(adapters.tensors), lora_dropout=0.0,
                        bias="none")
    with Progress(f"merging {len(adapters.tensors)} {adapters.kind.upper()} adapters (r={adapters.rank}) with PEFT",
                  log, unit=None):
        peft_model = get_peft_model(backbone.float(), config)
        state = {f"base_model.model.{module}.{part}": tensor
                 for module, parts in adapters.tensors.items() for part, tensor in parts.items()}
        result = set_peft_model_state_dict(peft_model, state)
        if result.unexpected_keys:
            raise CheckpointError(f"{adapters.directory}: PEFT did not use keys {result.unexpected_keys[:4]}")
        return peft_model.merge_and_unload()
