"""The README's training smoke run as written, curves.png after every epoch, and the offline weights hint."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=300)


def readme_smoke_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    start = text.index("```bash\n", text.index("**Smoke run**")) + len("```bash\n")
    lines = [line.split("#")[0].strip() for line in text[start:text.index("```", start)].splitlines()]
    commands = [shlex.split(line) for line in lines if line]
    assert commands and all(c[0] == "python" for c in commands)
    return [[sys.executable, *c[1:]] for c in commands]


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 10


@pytest.mark.slow
def test_readme_smoke_run_trains_and_draws_its_curves(tmp_path):
    """Run the README's smoke-run commands as written, in an empty folder."""
    for command in readme_smoke_commands():
        done = run(command, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "runs" / "smoke"
    history = json.loads((out / "history.json").read_text())
    losses = [epoch["val_loss"] for epoch in history["history"]]
    assert history["epochs_run"] == len(losses) >= 3 and min(losses[1:]) < losses[0]
    assert (out / "best" / "adapter_model.safetensors").is_file()
    assert_png(out / "curves.png")
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_curves_are_rewritten_every_epoch(tmp_path):
    from training.config import load_config
    from training.smoke_data import make_smoke_data
    from training.train import train

    make_smoke_data(tmp_path / "data", train=32, val=16)
    overrides = [f"data.train=[{{csv: {tmp_path / 'data' / 'train.csv'}, root: {tmp_path / 'data'}}}]",
                 f"data.val=[{{csv: {tmp_path / 'data' / 'val.csv'}, root: {tmp_path / 'data'}}}]",
                 f"run.out={tmp_path / 'run'}", "run.threads=1"]
    curves, history = tmp_path / "run" / "curves.png", tmp_path / "run" / "history.json"
    train(load_config(REPO / "configs" / "train" / "smoke.yaml", overrides + ["run.epochs=1"]))
    first = curves.read_bytes()
    assert_png(curves)
    assert len(json.loads(history.read_text())["history"]) == 1
    train(load_config(REPO / "configs" / "train" / "smoke.yaml", overrides + ["run.epochs=2"]), resume=True)
    assert_png(curves)
    assert curves.read_bytes() != first and len(json.loads(history.read_text())["history"]) == 2


@pytest.mark.parametrize("network", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_no_hub_weights_offline_fails_at_once_naming_model_weights(tmp_path, network):
    from training.smoke_data import make_smoke_data

    make_smoke_data(tmp_path / "runs" / "smoke" / "data", train=16, val=0)
    env = {**ENV, "HF_HOME": str(tmp_path / "hf")}  # an empty cache
    env.pop("HF_HUB_OFFLINE", None)
    if network == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused
    done = run([sys.executable, "-m", "training", "--config", "configs/train/smoke.yaml", "--set", "data.val=[]",
                "--set", "model.backbone=pe-core-t16-384", "--set", "model.weights=null"], tmp_path, env)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "vit_pe_core_tiny_patch16_384.fb" in errors[0], done.stderr
    assert "--set model.weights=FILE" in errors[0] and "--weights FILE" not in errors[0]
    assert "Retrying" not in done.stderr and "Traceback" not in done.stderr
