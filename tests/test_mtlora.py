"""MTLoRA export: ONNX vs the independent unmerged reference, the thesis invariants, metadata, bad input."""
from __future__ import annotations

from conftest import require_export_extra

require_export_extra()  # before the imports below, which need it

import shutil

import numpy as np
import onnx
import pytest
import torch
from conftest import TINY_BACKBONE
from helpers_faces import ASTRONAUT_BOX, TWO_PEOPLE_BOXES, TWO_PEOPLE_CLIP, clip_frame_rgb
from mtlora_reference import write_mtlora_files
from pe_reference import tiny_config
from safetensors.torch import load_file, save_file
from skimage import data
from test_export import TOLERANCE, relative_error, run_onnx

from export.__main__ import main as export_main
from export.build import build_model, model_document
from export.cli import run_main
from export.onnx_export import export_onnx
from runtime.crop import crop_face
from runtime.metadata import read_model_info

CFG = tiny_config(TINY_BACKBONE)
SIZE = CFG["image_size"]


def face_crops() -> np.ndarray:
    """Real faces cut with the runtime's crop: the astronaut, two people in a sample clip frame."""
    frame = clip_frame_rgb(TWO_PEOPLE_CLIP)
    crops = [crop_face(data.astronaut(), ASTRONAUT_BOX, SIZE)] + [crop_face(frame, box, SIZE) for box in TWO_PEOPLE_BOXES]
    return np.stack(crops)


IMAGES = np.concatenate([np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8), face_crops()])


def features(model, images=IMAGES) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model.backbone(model.preprocess(torch.from_numpy(images)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A test-made MTLoRA checkpoint (non-zero task LoRAs and shared LoRA B), exported to ONNX."""
    directory = tmp_path_factory.mktemp("mtlora")
    weights, adapters, reference, original = write_mtlora_files(directory, CFG, seed=3)
    model = build_model(TINY_BACKBONE, weights=weights, adapters=adapters)
    path = export_onnx(model, directory / "mtlora.onnx", model_document(model, weights=weights, adapters=adapters))
    return path, model, reference, original, weights, adapters


def test_checkpoint_has_the_reference_key_layout(trained):
    adapters = trained[5]
    sections = torch.load(adapters / "custom_layers.pt", weights_only=True)
    assert len(sections["mtl_layer"]) == 64 and len(sections["mtl_attn_pool"]) == 65
    assert "attn.q.lora_tasks_B.Emotion" in sections["mtl_layer"] and "out_proj.linear.weight" in sections["mtl_layer"]
    assert "probe.Age" in sections["mtl_attn_pool"] and "mlp.c_proj.lora_shared_B" in sections["mtl_attn_pool"]
    blocks = {k.split(".")[4] for k in load_file(str(adapters / "adapter_model.safetensors"))}
    assert blocks == {str(i) for i in range(CFG["depth"] - 1)}  # DoRA on blocks 0..n-2 only


def test_onnx_matches_the_unmerged_reference_on_random_images_and_faces(trained):
    path, _, reference, _, _, _ = trained
    got = run_onnx(path, IMAGES)
    want = {k: v.numpy() for k, v in reference(torch.from_numpy(IMAGES)).items()}
    assert list(got) == ["age", "gender", "emotion"]
    for task in want:
        assert got[task].shape == want[task].shape
        assert relative_error(got[task], want[task]) <= TOLERANCE, task
        assert np.abs(want[task]).max() > 1e-2


def test_task_paths_differ_and_the_task_loras_matter(trained):
    _, model, _, original, _, _ = trained
    got = features(model)
    base = original(torch.from_numpy(IMAGES))
    assert (got["Age"] - got["Gender"]).abs().max() > 1e-2
    assert (got["Age"] - base).abs().max() > 1e-2


def test_metadata_says_mtlora_and_the_runtime_contract_holds(trained):
    path, _, _, _, weights, adapters = trained
    info = read_model_info(path)
    assert info.adapter == "mtlora" and info.task_names == ["age", "gender", "emotion"]
    assert info.input_size == SIZE and not info.random_weights
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["images"]
    assert not any("lora_shared" in init.name for init in proto.graph.initializer)  # scale 0: not in the graph
    outputs = run_onnx(path, IMAGES[:1])
    assert {k: v.shape for k, v in outputs.items()} == {"age": (1, 9), "gender": (1, 2), "emotion": (1, 7)}


def test_shared_lora_does_not_change_the_output(trained, tmp_path):
    _, model, _, _, weights, adapters = trained
    copy = tmp_path / "adapters"
    shutil.copytree(adapters, copy)
    checkpoint = torch.load(copy / "custom_layers.pt", weights_only=True)
    for section in ("mtl_layer", "mtl_attn_pool"):
        for key, value in checkpoint[section].items():
            if "lora_shared" in key:
                value.mul_(-7.0).add_(1.0)
    torch.save(checkpoint, copy / "custom_layers.pt")
    changed = build_model(TINY_BACKBONE, weights=weights, adapters=copy)
    for task, value in features(changed).items():
        assert torch.equal(value, features(model)[task])


def test_zero_task_loras_give_the_original_last_block_and_pool(tmp_path):
    weights, adapters, _, original = write_mtlora_files(tmp_path, CFG, seed=4, mode="zero")
    got = features(build_model(TINY_BACKBONE, weights=weights, adapters=adapters))
    want = original(torch.from_numpy(IMAGES))
    assert want.abs().max() > 1e-1
    for task, value in got.items():
        assert relative_error(value.numpy(), want.numpy()) <= 1e-5, task


def test_identical_task_loras_give_identical_features(tmp_path):
    weights, adapters, _, _ = write_mtlora_files(tmp_path, CFG, seed=5, mode="same")
    got = features(build_model(TINY_BACKBONE, weights=weights, adapters=adapters))
    assert torch.allclose(got["Age"], got["Gender"], atol=1e-6) and torch.allclose(got["Age"], got["Emotion"], atol=1e-6)


def test_unmerged_pool_equals_the_merged_export_pool(trained):
    """The training form of mtl_attn_pool (task LoRAs as parameters) computes what the merged pools compute."""
    from export.config import load_backbone_config
    from export.model import create_backbone
    from export.mtlora import MTLoRAAttentionPool

    adapters = trained[5]
    config = load_backbone_config(TINY_BACKBONE)
    pool = MTLoRAAttentionPool(config.width, config.pool_heads, config.mlp_ratio, 4, ("Age", "Gender", "Emotion"))
    pool.load_state_dict(torch.load(adapters / "custom_layers.pt", weights_only=True)["mtl_attn_pool"])
    tokens = torch.randn(3, 17, config.width)
    template = create_backbone(config).attn_pool
    with torch.no_grad():
        for task in ("Age", "Emotion"):
            assert torch.allclose(pool(tokens, task), pool.merged_pool(task, template)(tokens), atol=1e-5)
    assert sum(p.numel() for n, p in pool.named_parameters() if "lora_tasks" in n and p.requires_grad) > 0


def edit_custom_layers(adapters, tmp_path, change):
    copy = tmp_path / "edited"
    shutil.copytree(adapters, copy)
    checkpoint = torch.load(copy / "custom_layers.pt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, copy / "custom_layers.pt")
    return copy


def rename_adapter_blocks(adapters, tmp_path, old, new):
    copy = tmp_path / "renamed"
    shutil.copytree(adapters, copy)
    state = load_file(str(copy / "adapter_model.safetensors"))
    save_file({k.replace(old, new): v for k, v in state.items()}, str(copy / "adapter_model.safetensors"))
    return copy


def drop_head(checkpoint):
    for key in [k for k in checkpoint["prediction_layers"] if k.startswith("Emotion.")]:
        del checkpoint["prediction_layers"][key]


def drop_pool_task(checkpoint):
    for key in [k for k in checkpoint["mtl_attn_pool"] if k.endswith(".Gender")]:
        del checkpoint["mtl_attn_pool"][key]


BAD = {
    "heads without a task of mtl_layer": (lambda a, t: edit_custom_layers(a, t, drop_head), "task lists do not match"),
    "pool without a task of the heads": (lambda a, t: edit_custom_layers(a, t, drop_pool_task), "task lists do not match"),
    "adapters on the MTLoRA block": (lambda a, t: rename_adapter_blocks(a, t, "resblocks.0.", "resblocks.1."),
                                     "wrong number of blocks"),
    "mtl_attn_pool missing": (lambda a, t: edit_custom_layers(a, t, lambda c: c.pop("mtl_attn_pool")),
                              "'mtl_attn_pool' is missing"),
    "mtl_layer of another width": (lambda a, t: edit_custom_layers(a, t, lambda c: c["mtl_layer"].update(
        {"ln_1.weight": torch.ones(48)})), "mtl_layer does not fit this backbone size"),
    "mtl_layer key missing": (lambda a, t: edit_custom_layers(a, t, lambda c: c["mtl_layer"].pop("ln_2.bias")),
                              "mtl_layer does not fit the thesis layout"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_mtlora_checkpoint_is_named_and_nothing_is_written(case, trained, tmp_path, capsys):
    weights, adapters = trained[4], trained[5]
    make, message = BAD[case]
    out = tmp_path / "out" / "model.onnx"
    args = ["--backbone", str(TINY_BACKBONE), "--weights", str(weights), "--adapters", str(make(adapters, tmp_path)),
            "--out", str(out)]
    assert run_main(export_main, args) == 2
    assert message in capsys.readouterr().err
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_dora_adapters_on_every_block_are_the_wrong_number_for_mtlora(trained, tmp_path, capsys):
    """A DoRA-MTL adapter dir (all blocks + pool) with MTLoRA custom layers: the block count is named."""
    from pe_reference import write_thesis_files

    _, dora_adapters, _ = write_thesis_files(tmp_path / "dora", CFG, seed=6)
    shutil.copy(trained[5] / "custom_layers.pt", dora_adapters / "custom_layers.pt")
    out = tmp_path / "out" / "model.onnx"
    assert run_main(export_main, ["--backbone", str(TINY_BACKBONE), "--weights", str(trained[4]), "--adapters",
                                  str(dora_adapters), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "wrong number of blocks" in err and "found adapters on [0, 1, 'attn_pool']" in err


def test_random_mtlora_checkpoint_exports_and_verifies(trained, tmp_path, capsys):
    """export.random_checkpoint --adapter mtlora → python -m export → export.verify, through the CLIs."""
    import cv2

    from export.random_checkpoint import main as random_main
    from export.verify import main as verify_main

    assert run_main(random_main, ["--backbone", str(TINY_BACKBONE), "--out", str(tmp_path / "rc"), "--rank", "4",
                                  "--adapter", "mtlora"]) == 0
    inputs = ["--backbone", str(TINY_BACKBONE), "--weights", str(tmp_path / "rc" / "RANDOM-PE-Core-TEST-TINY.pt"),
              "--adapters", str(tmp_path / "rc" / "RANDOM-TEST-TINY-mtlora-adapters")]
    model = tmp_path / "model.onnx"
    assert run_main(export_main, [*inputs, "--out", str(model)]) == 0
    info = read_model_info(model)
    assert info.adapter == "mtlora" and info.random_weights

    (tmp_path / "crops").mkdir()
    for i, crop in enumerate(face_crops()):
        cv2.imwrite(str(tmp_path / "crops" / f"face{i}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    capsys.readouterr()
    assert run_main(verify_main, [str(model), *inputs, "--crops", str(tmp_path / "crops")]) == 0
    assert "PASS" in capsys.readouterr().out
    # The test-made checkpoint is another model: verification must tell them apart.
    other = ["--backbone", str(TINY_BACKBONE), "--weights", str(trained[4]), "--adapters", str(trained[5])]
    assert run_main(verify_main, [str(model), *other, "--crops", str(tmp_path / "crops")]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_mtl_layer_wrapped_in_a_list_loads_the_same(trained, tmp_path):
    """The thesis loader accepts `checkpoint["mtl_layer"][0]`; so does the export."""
    _, model, _, _, weights, adapters = trained
    wrapped = edit_custom_layers(adapters, tmp_path, lambda c: c.update(mtl_layer=[c["mtl_layer"]]))
    got = features(build_model(TINY_BACKBONE, weights=weights, adapters=wrapped))
    for task, value in features(model).items():
        assert torch.equal(got[task], value)


def test_mtlora_linear_trains_only_its_low_rank_factors():
    """For training/: wrapping a pretrained Linear keeps its output; only the LoRA factors take gradients."""
    from export.mtlora import MTLoRALinear

    base = torch.nn.Linear(6, 5)
    layer = MTLoRALinear.from_linear(base, 2, ("Age", "Gender"))
    x = torch.randn(3, 6)
    assert torch.equal(layer(x), base(x)) and not layer.task_delta(x, "Age").abs().max()  # B starts at zero
    with torch.no_grad():
        layer.lora_tasks_B["Age"].normal_()
    (layer(x) + layer.task_delta(x, "Age")).sum().backward()
    assert layer.linear.weight.grad is None and layer.lora_tasks_A["Age"].grad.abs().max() > 0
    assert layer.lora_tasks_A["Gender"].grad is None
