"""Write a trained model in the thesis' checkpoint layout, which `python -m export` reads.

- `adapter_model.safetensors`: PEFT's adapter state, keys `base_model.model.<Meta module>.{lora_A.weight,
  lora_B.weight,lora_magnitude_vector}` (timm names renamed with export/names.py);
- `adapter_config.json`: the LoraConfig with the thesis' target_modules {in_proj, out_proj, c_fc, c_proj};
- `custom_layers.pt`: {"prediction_layers": heads} (+ "mtl_layer", "mtl_attn_pool" for MTLoRA);
- `backbone.safetensors` (partial fine-tune, random init): the whole backbone in timm's layout, since the
  thesis layout has no place for changed base weights;
- `training.json`: recipe, config, metrics and the export command.
We write PEFT's state dict ourselves rather than call `save_pretrained`, because the keys must be renamed
to Meta's modules; the content is what `save_pretrained` writes.
A directory appears complete or not at all: it is written beside its target and renamed into place.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import save_file

from export.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CUSTOM_LAYERS
from export.names import timm_to_meta_module
from training.mtlora import custom_layers, is_mtlora
from facecue import interrupts

BACKBONE_WEIGHTS = "backbone.safetensors"
TRAINING_JSON = "training.json"
THESIS_TARGET_MODULES = ["c_fc", "c_proj", "in_proj", "out_proj"]


def meta_adapter_state(peft_backbone: PeftModel) -> dict[str, torch.Tensor]:
    """PEFT adapter tensors keyed by Meta PE module names (the thesis' adapter_model.safetensors)."""
    state = {}
    for key, value in get_peft_model_state_dict(peft_backbone).items():
        body = key.removeprefix("base_model.model.")
        for part in ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector"):
            if body.endswith("." + part):
                module = body[: -len(part) - 1]
                state[f"base_model.model.{timm_to_meta_module(module)}.{part}"] = value.detach().float().cpu().contiguous()
                break
        else:
            raise KeyError(f"unexpected PEFT key {key!r}")
    return state


def adapter_config(peft_backbone: PeftModel) -> dict:
    config = peft_backbone.peft_config["default"].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    config.update(target_modules=THESIS_TARGET_MODULES, base_model_name_or_path=None,
                  auto_mapping={"base_model_class": "VisionTransformer", "parent_library": "core.vision_encoder.pe"})
    return config


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def write_files(directory: Path, model, summary: dict) -> None:
    """The files of one checkpoint into an existing, empty `directory`."""
    mtlora = is_mtlora(model)
    backbone = model.backbone.trunk if mtlora else model.backbone  # MTLoRA: the shared DoRA is on the trunk
    if isinstance(backbone, PeftModel):
        save_file(meta_adapter_state(backbone), str(directory / ADAPTER_WEIGHTS))
        (directory / ADAPTER_CONFIG).write_text(json.dumps(adapter_config(backbone), indent=2))
        base = backbone.get_base_model()
    else:
        base = backbone
    custom = {"prediction_layers": _cpu(model.heads.state_dict())}
    if mtlora:
        custom |= {k: _cpu(v) for k, v in custom_layers(model).items()}
    torch.save(custom, directory / CUSTOM_LAYERS)
    if summary.get("writes_backbone"):
        # a PEFT-wrapped Linear keeps its frozen weight as `<module>.base_layer.weight`
        state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}
        save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()}, str(directory / BACKBONE_WEIGHTS))
    (directory / TRAINING_JSON).write_text(json.dumps(summary, indent=2, default=str))


def write_checkpoint(target: str | Path, model, summary: dict) -> Path:
    """Write atomically: a temp dir beside `target`, then swap it in."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        write_files(tmp, model, summary)
        _swap(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    interrupts.check()
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def save_state(path: Path, state: dict) -> None:
    """The resumable training state (`last/state.pt`), written to a temp file and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    interrupts.check()
    tmp.replace(path)
