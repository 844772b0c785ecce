"""`python -m export.random_checkpoint --backbone pe-core-l14-336 --out DIR`: RANDOM-weight files in the
published layouts, so the full-size path runs end to end without a download. For plumbing only.

Writes, from the published key layouts, not from any model class:
- `RANDOM-PE-Core-<name>.pt`: Meta's whole-CLIP layout (vision under `visual.`, a text-tower stub);
- `RANDOM-<name>-dora-adapters/` (named per backbone like the weights; refuses another backbone's folder): `adapter_model.safetensors` (DoRA on, non-zero B, perturbed magnitudes),
  `adapter_config.json` (thesis LoraConfig), `custom_layers.pt` (deep heads, non-trivial BatchNorm);
- or, with `--adapter mtlora`, `RANDOM-<name>-mtlora-adapters/`: DoRA on blocks 0..n-2 only, and `custom_layers.pt`
  with `mtl_layer` / `mtl_attn_pool` (copies of the last block's and the pool's weights as `*.linear.*`,
  non-zero shared and task LoRAs, one probe per task) beside deep heads that read the width (no `proj`).
Every file is marked (`facecue_random_weights`, a `RANDOM_WEIGHTS` file); models exported from them say
`random_weights: true` in their metadata.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # first: without the export extra, one line instead of an import traceback
    from facecue.cli import run_module

    sys.exit(run_module("export.random_checkpoint", "python -m export.random_checkpoint", "export"))

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from export.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CUSTOM_LAYERS, RANDOM_MARKER_FILE
from export.cli import run_main, setup_logging
from export.config import BackboneConfig, load_backbone_config
from export.heads import NUM_CLASSES, THESIS_TASKS
from export.weights import RANDOM_MARKER_KEY

log = logging.getLogger(__name__)


def _linear(gen, out_dim: int, in_dim: int, prefix: str, fused: bool = False) -> dict[str, torch.Tensor]:
    weight = torch.randn(out_dim, in_dim, generator=gen) * in_dim**-0.5
    bias = torch.randn(out_dim, generator=gen) * 0.02
    if fused:  # upstream MultiheadAttention-style Parameters
        return {f"{prefix}_weight": weight, f"{prefix}_bias": bias}
    return {f"{prefix}.weight": weight, f"{prefix}.bias": bias}


def _norm(gen, dim: int, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": 1 + 0.1 * torch.randn(dim, generator=gen), f"{prefix}.bias": 0.02 * torch.randn(dim, generator=gen)}


def meta_vision_weights(config: BackboneConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """PE's vision tower in Meta's naming, upstream layout (`attn.in_proj_weight`)."""
    w, hidden = config.width, int(config.width * config.mlp_ratio)
    state = {"conv1.weight": torch.randn(w, 3, config.patch_size, config.patch_size, generator=gen) * (3 * config.patch_size**2) ** -0.5,
             "class_embedding": torch.randn(w, generator=gen) * 0.02,
             "positional_embedding": torch.randn(config.grid**2 + 1, w, generator=gen) * 0.02,
             **_norm(gen, w, "ln_pre")}
    for i in range(config.depth):
        block = f"transformer.resblocks.{i}"
        state |= _norm(gen, w, f"{block}.ln_1") | _linear(gen, 3 * w, w, f"{block}.attn.in_proj", fused=True)
        state |= _linear(gen, w, w, f"{block}.attn.out_proj") | _norm(gen, w, f"{block}.ln_2")
        state |= _linear(gen, hidden, w, f"{block}.mlp.c_fc") | _linear(gen, w, hidden, f"{block}.mlp.c_proj")
    state |= _norm(gen, w, "ln_post") | {"attn_pool.probe": torch.randn(1, 1, w, generator=gen)}
    state |= _linear(gen, 3 * w, w, "attn_pool.attn.in_proj", fused=True) | _linear(gen, w, w, "attn_pool.attn.out_proj")
    state |= _norm(gen, w, "attn_pool.layernorm")
    state |= _linear(gen, hidden, w, "attn_pool.mlp.c_fc") | _linear(gen, w, hidden, "attn_pool.mlp.c_proj")
    state["proj"] = torch.randn(w, config.proj_dim, generator=gen) * w**-0.5
    return state


def adapted_modules(config: BackboneConfig) -> list[tuple[str, str]]:
    """(Meta module, its weight key in the vision state dict) for every Linear the thesis adapts."""
    modules = []
    for i in range(config.depth):
        block = f"transformer.resblocks.{i}"
        modules += [(f"{block}.attn.in_proj", f"{block}.attn.in_proj_weight"),
                    (f"{block}.attn.out_proj", f"{block}.attn.out_proj.weight"),
                    (f"{block}.mlp.c_fc", f"{block}.mlp.c_fc.weight"), (f"{block}.mlp.c_proj", f"{block}.mlp.c_proj.weight")]
    return modules + [(m, f"{m}.weight") for m in ("attn_pool.attn.out_proj", "attn_pool.mlp.c_fc", "attn_pool.mlp.c_proj")]


def dora_adapters(config: BackboneConfig, vision: dict, rank: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for module, weight_key in adapted_modules(config):
        weight = vision[weight_key]
        a = torch.randn(rank, weight.shape[1], generator=gen) * weight.shape[1] ** -0.5
        b = torch.randn(weight.shape[0], rank, generator=gen) * 0.02
        magnitude = (weight + b @ a).norm(dim=1) * (1 + 0.05 * torch.randn(weight.shape[0], generator=gen))
        prefix = f"base_model.model.{module}"
        state |= {f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b, f"{prefix}.lora_magnitude_vector": magnitude}
    return state


def thesis_adapter_config(rank: int) -> dict:
    return {"peft_type": "LORA", "r": rank, "lora_alpha": rank, "use_dora": True, "use_rslora": False,
            "lora_dropout": 0.5, "bias": "none", "fan_in_fan_out": False, "task_type": None,
            "target_modules": ["c_fc", "c_proj", "in_proj", "out_proj"], "init_lora_weights": True,
            "auto_mapping": {"base_model_class": "VisionTransformer", "parent_library": "core.vision_encoder.pe"}}


def deep_heads(config: BackboneConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    d, h = config.proj_dim, config.head_hidden
    state = {}
    for task in THESIS_TASKS:
        state |= {f"{task}.0.weight": 1 + 0.1 * torch.randn(d, generator=gen), f"{task}.0.bias": 0.1 * torch.randn(d, generator=gen),
                  f"{task}.0.running_mean": 0.3 * torch.randn(d, generator=gen),
                  f"{task}.0.running_var": 0.5 + torch.rand(d, generator=gen),
                  f"{task}.0.num_batches_tracked": torch.tensor(1000)}
        state |= _linear(gen, h, d, f"{task}.2") | _linear(gen, NUM_CLASSES[task], h, f"{task}.4")
    return state


def _mtlora_linear(gen, weight, bias, rank: int, prefix: str) -> dict[str, torch.Tensor]:
    """One MTLoRALinear's keys: frozen copy, shared LoRA (scale 0 in the model), one LoRA per task."""
    out_dim, in_dim = weight.shape
    state = {f"{prefix}.linear.weight": weight.clone(), f"{prefix}.linear.bias": bias.clone(),
             f"{prefix}.lora_shared_A": torch.randn(rank, in_dim, generator=gen) * in_dim**-0.5,
             f"{prefix}.lora_shared_B": torch.randn(out_dim, rank, generator=gen) * 0.02}
    for task in THESIS_TASKS:
        state[f"{prefix}.lora_tasks_A.{task}"] = torch.randn(rank, in_dim, generator=gen) * in_dim**-0.5
        state[f"{prefix}.lora_tasks_B.{task}"] = torch.randn(out_dim, rank, generator=gen) * 0.02
    return state


def mtlora_sections(config: BackboneConfig, vision: dict, rank: int, gen: torch.Generator) -> dict[str, dict]:
    """`mtl_layer` from the last block's weights, `mtl_attn_pool` from the pool's, in the thesis key layout."""
    last = f"transformer.resblocks.{config.depth - 1}"
    qkv = zip("qkv", vision[f"{last}.attn.in_proj_weight"].chunk(3), vision[f"{last}.attn.in_proj_bias"].chunk(3))
    block = {k: vision[f"{last}.{k}"] for k in ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias")}
    for name, weight, bias in qkv:
        block |= _mtlora_linear(gen, weight, bias, rank, f"attn.{name}")
    for name in ("attn.out_proj", "mlp.c_fc", "mlp.c_proj"):
        block |= _mtlora_linear(gen, vision[f"{last}.{name}.weight"], vision[f"{last}.{name}.bias"], rank,
                                name.removeprefix("attn."))
    pool = {f"layernorm.{k}": vision[f"attn_pool.layernorm.{k}"] for k in ("weight", "bias")}
    pool |= {f"probe.{task}": vision["attn_pool.probe"] + 0.1 * torch.randn(vision["attn_pool.probe"].shape, generator=gen)
             for task in THESIS_TASKS}
    in_proj = zip(("q_proj", "k_proj", "v_proj"), vision["attn_pool.attn.in_proj_weight"].chunk(3),
                  vision["attn_pool.attn.in_proj_bias"].chunk(3))
    for name, weight, bias in in_proj:
        pool |= _mtlora_linear(gen, weight, bias, rank, name)
    for name in ("attn.out_proj", "mlp.c_fc", "mlp.c_proj"):
        pool |= _mtlora_linear(gen, vision[f"attn_pool.{name}.weight"], vision[f"attn_pool.{name}.bias"], rank,
                               name.removeprefix("attn."))
    return {"mtl_layer": block, "mtl_attn_pool": pool}


def write_random_checkpoint(backbone: str, out: str | Path, rank: int = 64, seed: int = 0,
                            adapter: str = "dora") -> tuple[Path, Path]:
    """Returns (weights file, adapter dir); `adapter` is "dora" (DoRA-MTL) or "mtlora"."""
    config = load_backbone_config(backbone)
    out = Path(out)
    gen = torch.Generator().manual_seed(seed)
    log.info("making random %s weights (%d blocks, width %d)", config.name, config.depth, config.width)
    vision = meta_vision_weights(config, gen)
    text_stub = {"logit_scale": torch.tensor(4.6052), "token_embedding.weight": torch.zeros(8, 4),
                 "ln_final.weight": torch.ones(4), "text_projection": torch.zeros(4, 4)}
    tag = config.name.removeprefix('pe-core-').upper()
    adapter_dir = out / f"RANDOM-{tag}-{adapter}-adapters"  # per backbone, like the weights file
    marker = adapter_dir / RANDOM_MARKER_FILE
    if marker.is_file() and f"backbone: {config.name}\n" not in marker.read_text():
        raise FileExistsError(f"{adapter_dir} holds another backbone's random adapters; choose another --out")
    adapter_dir.mkdir(parents=True, exist_ok=True)
    weights = out / f"RANDOM-PE-Core-{tag}.pt"
    log.info("writing %s", weights)
    torch.save({f"visual.{k}": v for k, v in vision.items()} | text_stub | {RANDOM_MARKER_KEY: torch.tensor(1)}, weights)
    log.info("writing DoRA adapters (r=%d) and deep heads to %s", rank, adapter_dir)
    dora = dora_adapters(config, vision, rank, gen)
    custom_layers = {"prediction_layers": deep_heads(config, gen), RANDOM_MARKER_KEY: True}
    if adapter == "mtlora":  # DoRA on blocks 0..n-2 only; the last block and the pool are the MTLoRA sections
        last = f".transformer.resblocks.{config.depth - 1}."
        dora = {k: v for k, v in dora.items() if last not in k and ".attn_pool." not in k}
        custom_layers |= mtlora_sections(config, vision, rank, gen)
        if config.width != config.proj_dim:  # MTLoRA heads read the pool output, which has the width
            custom_layers["prediction_layers"] = deep_heads(replace(config, proj_dim=config.width), gen)
    save_file(dora, str(adapter_dir / ADAPTER_WEIGHTS))
    (adapter_dir / ADAPTER_CONFIG).write_text(json.dumps(thesis_adapter_config(rank), indent=2))
    torch.save(custom_layers, adapter_dir / CUSTOM_LAYERS)
    marker.write_text(f"Random weights from export.random_checkpoint: for plumbing only.\nbackbone: {config.name}\n")
    return weights, adapter_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.random_checkpoint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--out", required=True, help="directory to write into")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adapter", choices=("dora", "mtlora"), default="dora",
                        help="DoRA-MTL layout (default) or the MTLoRA layout")
    args = parser.parse_args(argv)
    setup_logging()
    weights, adapters = write_random_checkpoint(args.backbone, args.out, args.rank, args.seed, args.adapter)
    print(f"RANDOM weights (plumbing only): --weights {weights} --adapters {adapters}")
    return 0

