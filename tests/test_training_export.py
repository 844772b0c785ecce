"""training → `python -m export` unchanged → ONNX matches the training model (MTLoRA too); resume; MTLoRA
isolation and start; evaluate with --onnx and --checkpoint."""
from __future__ import annotations

from conftest import require_export_extra

require_export_extra()  # before the imports below, which need it

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.config import load_backbone_config
from test_training import TINY, faces, one_thread, tiny_config  # noqa: F401  (fixtures)


def trained_model(config):
    """The training model of a finished run: rebuilt from the config, trainable state from last/state.pt."""
    from training.model import build_training_model

    model = build_training_model(config, load_backbone_config(TINY))
    state = torch.load(f"{config.run.out}/last/state.pt", weights_only=True)
    model.load_state_dict(state["model"], strict=False)
    return model.eval()


@pytest.mark.parametrize("recipe", ["loraplus", "partial", "mtlora"])
def test_saved_directory_exports_unchanged_and_matches(tmp_path, faces, recipe):
    from export.__main__ import main as export_main
    from training.__main__ import main as train_main
    from training.evaluate import main as evaluate_main

    out = tmp_path / "run"
    overrides = [f"model.backbone={TINY}", f"model.weights={faces['weights']}", f"run.out={out}",
                 f"data.train=[{{csv: {faces['train']}, root: {faces['root']}}}]",
                 f"data.val=[{{csv: {faces['val']}, root: {faces['root']}}}]", "run.epochs=1", "run.threads=1",
                 "adapter.rank=4", "adapter.alpha=4", "optim.lr=1e-2", "optim.unfreeze_blocks=1"]
    config_file = f"configs/train/{recipe}.yaml"
    assert train_main(["--config", config_file] + [a for o in overrides for a in ("--set", o)]) == 0
    summary = json.loads((out / "best" / "training.json").read_text())
    command = summary["export_command"].split()[3:]  # after "python -m export"
    assert export_main(command) == 0

    from training.config import load_config
    model = trained_model(load_config(config_file, overrides))
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images})
    with torch.no_grad():
        want = [t.numpy() for t in model(torch.from_numpy(images))]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)
    if recipe != "partial":  # trained adapters are not the identity: the export really carries them
        from safetensors.torch import load_file
        b = [v for k, v in load_file(out / "best" / "adapter_model.safetensors").items() if k.endswith("lora_B.weight")]
        assert any(v.abs().max() > 0 for v in b)
        assert all(k.startswith("base_model.model.transformer.resblocks.") or "attn_pool" in k
                   for k in load_file(out / "best" / "adapter_model.safetensors"))
    if recipe == "mtlora":  # and so do the task LoRAs of the final block and the pools
        custom = torch.load(out / "best" / "custom_layers.pt", weights_only=True)
        for section in ("mtl_layer", "mtl_attn_pool"):
            assert any(v.abs().max() > 0 for k, v in custom[section].items() if "lora_tasks_B" in k), section

    report_dir = tmp_path / "eval"
    assert evaluate_main(["--onnx", str(out / "model.onnx"), "--labels", str(faces["val"]), "--crops",
                          str(faces["root"]), "--out", str(report_dir)]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    from training.data import load_source
    from training.config import DataSource
    val = load_source(DataSource(csv=str(faces["val"]), root=str(faces["root"])), 32, 0.0, None)
    crops = np.stack([val.crop(i) for i in range(len(val))])
    gender = session.run(["gender"], {"images": crops})[0].argmax(1)
    assert report["tasks"]["gender"]["all"]["accuracy"] == pytest.approx(np.mean(gender == val.table.labels[:, 1]))
    assert (report_dir / "confusion_gender_all.png").stat().st_size > 1000
    # --checkpoint builds the PyTorch model from best/ as export does: the same predictions as the ONNX model
    assert evaluate_main(["--checkpoint", str(out / "best"), "--labels", str(faces["val"]), "--crops",
                          str(faces["root"]), "--out", str(tmp_path / "eval_torch")]) == 0
    assert json.loads((tmp_path / "eval_torch" / "report.json").read_text())["tasks"] == report["tasks"]


def test_untrained_mtlora_model_is_the_pretrained_tower(faces):
    """Task LoRAs start at B = 0 and DoRA at identity: every task's feature is the timm pool's output."""
    from export.model import create_backbone
    from export.weights import load_backbone_weights
    from training.model import build_training_model

    config = tiny_config(faces, faces["root"] / "unused", "mtlora")
    model = build_training_model(config, load_backbone_config(TINY)).eval()
    reference = create_backbone(load_backbone_config(TINY))
    load_backbone_weights(reference, faces["weights"])
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        pixels = model.preprocess(images)
        want = reference.forward_head(reference.forward_features(pixels), pre_logits=True)
        got = model.backbone(pixels)
    assert list(got) == config.data.tasks
    for feature in got.values():
        torch.testing.assert_close(feature, want, atol=1e-5, rtol=1e-5)


def test_resume_continues_from_last_epoch(tmp_path, faces):
    from training.train import train

    first = tiny_config(faces, tmp_path / "run", "dora", "run.epochs=1")
    _, state = train(first)
    saved = torch.load(tmp_path / "run" / "last" / "state.pt", weights_only=True)
    resumed = tiny_config(faces, tmp_path / "run", "dora", "run.epochs=2")
    _, state = train(resumed, resume=True)
    assert [e["epoch"] for e in state.history] == [1, 2]
    assert state.history[0]["val_loss"] == saved["train_state"]["history"][0]["val_loss"]
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(tiny_config(faces, tmp_path / "empty", "dora"), resume=True)
    from export.errors import CheckpointError
    with pytest.raises(CheckpointError, match="cannot resume from .*state.pt: it lacks"):  # another recipe's state
        train(tiny_config(faces, tmp_path / "run", "mtlora", "run.epochs=3"), resume=True)
    (tmp_path / "broken" / "last").mkdir(parents=True)
    (tmp_path / "broken" / "last" / "state.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="not a readable training state"):
        train(tiny_config(faces, tmp_path / "broken", "dora"), resume=True)


def test_mtlora_task_branches_get_gradients_only_from_their_task(tmp_path, faces):
    from training.model import build_training_model
    from training.mtlora import custom_layers

    config = tiny_config(faces, tmp_path, "mtlora")
    model = build_training_model(config, load_backbone_config(TINY)).train()
    with torch.no_grad():  # non-zero B, so A's gradients are not trivially zero
        for name, parameter in model.named_parameters():
            if "lora_tasks_B" in name:
                parameter.normal_(0, 0.1)
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    outputs = dict(zip(["Age", "Gender", "Emotion"], model(images)))
    outputs["Gender"].square().sum().backward()
    branches = {n: p.grad for n, p in model.named_parameters() if "lora_tasks" in n or "probe." in n}
    assert branches
    for name, grad in branches.items():
        own = name.endswith(".Gender")
        assert (grad is not None and grad.abs().sum() > 0) == own, name
    shared = [p.grad for n, p in model.named_parameters() if "lora_B" in n and "blocks.0" in n]  # shared DoRA
    assert shared and all(g is not None and g.abs().sum() > 0 for g in shared)
    assert all(p.grad is None for n, p in model.named_parameters() if ".linear." in n)  # frozen copies
    layers = custom_layers(model)
    assert len(layers["mtl_layer"]) == 64 and len(layers["mtl_attn_pool"]) == 65
    assert "attn.q.lora_tasks_A.Age" in layers["mtl_layer"] and "probe.Emotion" in layers["mtl_attn_pool"]
