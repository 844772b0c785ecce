"""Export inputs: the weight layouts, heads-only export, external data, and every error case (CLI)."""
from __future__ import annotations

from conftest import require_export_extra

require_export_extra()  # before the imports below, which need it

import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from conftest import TINY_BACKBONE
from pe_reference import (ThesisPipeline, VisionTransformer, meta_state_dict, randomize, thesis_heads, tiny_config,
                          write_thesis_files)
from safetensors.torch import load_file, save_file
from test_export import TOLERANCE, relative_error, run_onnx

from export.__main__ import main
from export.cli import run_main
from runtime.metadata import read_model_info

CFG = tiny_config(TINY_BACKBONE)
IMAGES = np.random.default_rng(7).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)


def export_cli(*args) -> int:
    return run_main(main, ["--backbone", str(TINY_BACKBONE), *map(str, args)])


def assert_parity(path, reference):
    got = run_onnx(path, IMAGES)
    want = reference(torch.from_numpy(IMAGES))
    assert list(got) == list(want)
    for task in want:
        assert relative_error(got[task], want[task].numpy()) <= TOLERANCE, task


@pytest.fixture(scope="module")
def thesis(tmp_path_factory):
    return write_thesis_files(tmp_path_factory.mktemp("thesis"), CFG, seed=5)


def test_upstream_unprefixed_layout_and_linear_probe_heads(tmp_path):
    """Vision-only Meta file with `attn.in_proj_weight`, `--heads` without adapters, linear-probe heads."""
    tower = randomize(VisionTransformer(CFG["image_size"], CFG["patch_size"], CFG["width"], CFG["depth"],
                                        CFG["heads"], CFG["mlp_ratio"], CFG["pool_heads"], CFG["proj_dim"]), 11)
    torch.save(meta_state_dict(tower, prefix="", migrated=False, text_stub=False), tmp_path / "pe.pt")
    heads = thesis_heads(CFG["proj_dim"], None, ("Age", "Emotion"), batch_norm=False, seed=12)
    torch.save(heads.state_dict(), tmp_path / "heads.pt")
    out = tmp_path / "model.onnx"
    assert export_cli("--weights", tmp_path / "pe.pt", "--heads", tmp_path / "heads.pt", "--out", out) == 0
    assert_parity(out, ThesisPipeline(tower, heads))
    info = read_model_info(out)
    assert info.task_names == ["age", "emotion"] and info.adapter == "none"


def test_plain_lora_with_scaling_and_plain_heads(tmp_path):
    """Any LoRA adapter saved the thesis' way: no DoRA, lora_alpha ≠ r (scale 2), plain heads, one task."""
    weights, adapters, reference = write_thesis_files(tmp_path, CFG, tasks=("Gender",), seed=9, deep=False,
                                                      use_dora=False, alpha=8)
    out = tmp_path / "model.onnx"
    assert export_cli("--weights", weights, "--adapters", adapters, "--out", out) == 0
    assert_parity(out, reference)
    info = read_model_info(out)
    assert info.adapter == "lora" and info.task_names == ["gender"]


def test_timm_layout_weights_and_external_data_and_random_flag(thesis, tmp_path):
    from export.build import build_model

    weights, adapters, reference = thesis
    timm_weights = tmp_path / "pe-timm.safetensors"
    save_file(build_model(TINY_BACKBONE, weights=weights, heads=adapters / "custom_layers.pt").backbone.state_dict(),
              timm_weights)
    marked = tmp_path / "adapters"
    shutil.copytree(adapters, marked)
    (marked / "RANDOM_WEIGHTS").write_text("random\n")
    out = tmp_path / "ext" / "model.onnx"
    assert export_cli("--weights", timm_weights, "--adapters", marked, "--out", out,
                      "--external-data-threshold", 1) == 0
    proto = onnx.load(str(out), load_external_data=False)
    assert any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert_parity(out, reference)
    assert read_model_info(out).random_weights


def test_another_grid_follows_meta_positions(thesis, tmp_path, caplog):
    """Weights made at a 4x4 grid, exported at 6x6 (timm's RoPE reference grid is 24x24): Meta's PE runs at
    any grid with integer RoPE positions and a bilinearly resampled position embedding; so must the export."""
    weights, adapters, reference = thesis
    config = tmp_path / "pe-core-test-tiny-48.yaml"
    config.write_text(TINY_BACKBONE.read_text().replace("image_size: 32", "image_size: 48"))
    out = tmp_path / "model.onnx"
    with caplog.at_level("INFO"):
        assert run_main(main, ["--backbone", str(config), "--weights", str(weights), "--adapters", str(adapters),
                               "--out", str(out)]) == 0
    # the whole CLIP file: one line says what outside the vision tower was skipped
    assert any("skipped 6 keys outside the vision tower" in r.getMessage() for r in caplog.records)
    images = np.random.default_rng(8).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    got, want = run_onnx(out, images), reference(torch.from_numpy(images))
    for task in want:
        assert relative_error(got[task], want[task].numpy()) <= TOLERANCE, task


def test_offline_without_weights_names_weights_flag(thesis, tmp_path, capsys, monkeypatch):
    """A published backbone without --weights asks timm for its pretrained weights; offline, the error says what to pass."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    _, adapters, _ = thesis
    out = tmp_path / "out" / "m.onnx"
    assert run_main(main, ["--backbone", "pe-core-t16-384", "--heads", str(adapters / "custom_layers.pt"),
                           "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "vit_pe_core_tiny_patch16_384.fb" in err and "pass --weights FILE" in err
    assert not out.parent.exists()


def test_timm_pretrained_weights_from_the_hub_cache_at_another_size(tmp_path, monkeypatch):
    """The timm pretrained path, fed from a Hugging Face cache laid out as a download leaves it (offline);
    a config at another size gets the position embedding resampled as Meta's PE does (bilinear)."""
    import huggingface_hub.constants
    import torch.nn.functional as F

    from export.build import pretrained_backbone
    from export.config import load_backbone_config
    from export.model import create_backbone

    published = load_backbone_config("pe-core-t16-384")
    hub_weights = {k: v.clone() for k, v in create_backbone(published).state_dict().items()}
    repo, commit = tmp_path / "hub" / "models--timm--vit_pe_core_tiny_patch16_384.fb", "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(hub_weights, repo / "snapshots" / commit / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    small = pretrained_backbone(replace(published, image_size=192)).state_dict()  # grid 12 instead of 24
    assert torch.equal(small["blocks.3.attn.qkv.weight"], hub_weights["blocks.3.attn.qkv.weight"])
    grid = hub_weights["pos_embed"][:, 1:].reshape(1, 24, 24, -1).permute(0, 3, 1, 2)
    bilinear = F.interpolate(grid, size=(12, 12), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    assert torch.allclose(small["pos_embed"][:, 1:], bilinear.reshape(1, 144, -1), atol=1e-6)
    assert torch.equal(small["pos_embed"][:, 0], hub_weights["pos_embed"][:, 0])


def edit_adapter(adapters, tmp_path, rename=None, config=None, tensors=None):
    """A copy of the adapter dir with renamed keys, changed config fields or replaced tensors."""
    copy = tmp_path / "edited"
    shutil.copytree(adapters, copy)
    state = load_file(str(copy / "adapter_model.safetensors"))
    if rename:
        state = {k.replace(*rename): v for k, v in state.items()}
    state.update(tensors or {})
    save_file(state, str(copy / "adapter_model.safetensors"))
    if config:
        data = json.loads((copy / "adapter_config.json").read_text())
        data.update(config)
        (copy / "adapter_config.json").write_text(json.dumps(data))
    return copy


def edit_weights(weights, tmp_path, drop=None, add=None):
    state = torch.load(weights, weights_only=True)
    state.pop(drop, None)
    state.update(add or {})
    torch.save(state, tmp_path / "edited.pt")
    return tmp_path / "edited.pt"


def edit_heads(adapters, tmp_path, change):
    copy = tmp_path / "heads-edited"
    shutil.copytree(adapters, copy)
    checkpoint = torch.load(copy / "custom_layers.pt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, copy / "custom_layers.pt")
    return copy


A_KEY = "base_model.model.transformer.resblocks.0.mlp.c_fc.lora_A.weight"
CASES = {
    "missing weights file": (lambda w, a, t: ["--weights", t / "nope.pt", "--adapters", a], "not found"),
    "unreadable weights": (lambda w, a, t: ["--weights", (t / "bad.pt").write_bytes(b"junk") and t / "bad.pt",
                                            "--adapters", a], "not a readable checkpoint"),
    "missing adapter dir": (lambda w, a, t: ["--weights", w, "--adapters", t / "none"], "not found"),
    "different depth": (lambda w, a, t: ["--weights", w, "--adapters", edit_adapter(
        a, t, rename=("resblocks.1.", "resblocks.7."))], "different backbone depth"),
    "different width": (lambda w, a, t: ["--weights", w, "--adapters", edit_adapter(
        a, t, tensors={A_KEY: torch.ones(4, 48)})], "different backbone size"),
    "rank mismatch": (lambda w, a, t: ["--weights", w, "--adapters", edit_adapter(a, t, config={"r": 8})],
                      "rank mismatch"),
    "not a LoRA adapter": (lambda w, a, t: ["--weights", w, "--adapters", edit_adapter(
        a, t, config={"peft_type": "IA3"})], "not a LoRA/DoRA adapter"),
    "unknown adapter key": (lambda w, a, t: ["--weights", w, "--adapters", edit_adapter(
        a, t, tensors={"base_model.model.conv1.lora_A.weight": torch.ones(4, 3)})], "not an adaptable"),
    "missing vision key": (lambda w, a, t: ["--weights", edit_weights(w, t, drop="visual.ln_post.weight"),
                                            "--adapters", a], "missing ['norm.weight']"),
    "unknown vision key": (lambda w, a, t: ["--weights", edit_weights(w, t, add={"visual.extra": torch.ones(1)}),
                                            "--adapters", a], "unknown ['extra']"),
    "weights of another size": (lambda w, a, t: ["--weights", edit_weights(
        w, t, add={"visual.ln_pre.weight": torch.ones(48)}), "--adapters", a], "different backbone size"),
    "extra task head": (lambda w, a, t: ["--weights", w, "--adapters", edit_heads(
        a, t, lambda c: c["prediction_layers"].update({"Ethnicity.2.weight": torch.ones(3, 24)}))], "Ethnicity"),
    "head missing its last layer": (lambda w, a, t: ["--weights", w, "--adapters", edit_heads(
        a, t, lambda c: [c["prediction_layers"].pop(k) for k in ("Age.4.weight", "Age.4.bias")])], "outputs"),
    "no heads": (lambda w, a, t: ["--weights", w, "--adapters", edit_heads(
        a, t, lambda c: c.update(prediction_layers={}))], "no task heads"),
    "MTLoRA checkpoint": (lambda w, a, t: ["--weights", w, "--adapters", edit_heads(
        a, t, lambda c: c.update(mtl_layer={}))], "MTLoRA checkpoint"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named_and_nothing_is_written(case, thesis, tmp_path, capsys):
    weights, adapters, _ = thesis
    make_args, message = CASES[case]
    out = tmp_path / "out" / "model.onnx"
    assert export_cli(*make_args(weights, adapters, tmp_path), "--out", out) == 2
    assert message in capsys.readouterr().err
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_unknown_backbone_is_named(tmp_path, capsys):
    assert run_main(main, ["--backbone", "pe-core-x99", "--heads", "h.pt", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "unknown backbone 'pe-core-x99'" in capsys.readouterr().err


def test_no_weights_and_no_published_weights_is_named(thesis, tmp_path, capsys):
    _, adapters, _ = thesis
    assert export_cli("--adapters", adapters, "--out", tmp_path / "m.onnx") == 2
    assert "no published weights: pass --weights FILE" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
