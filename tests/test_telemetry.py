"""No usage reports to library vendors (facecue/telemetry.py), checked in real subprocesses with a scratch home.

ONNX Runtime's telemetry leaves its device id and event queue under ~/.cache/Microsoft/DeveloperTools when it is
on; NNCF swaps its Google Analytics sender for a stub when it is off. Each test first shows the library reporting
without facecue's switch (or skips: a build without telemetry has nothing to switch off), then silent with it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ORT_QUEUE = Path("Microsoft") / "DeveloperTools" / ".onnxruntime"


def run_python(code: str, home: Path, **env: str) -> str:
    """`code` in a fresh interpreter whose home and cache are `home`; `env` on top, with facecue's switches unset."""
    environment = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "NNCF_CI")}
    environment |= {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), **env}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_onnx_runtime_keeps_no_device_id_and_queues_no_events(tiny_model, tmp_path):
    inference = ("from runtime.backends import open_backend\n"
                 "from runtime.config import ClassifierConfig\n"
                 "import numpy as np\n"
                 f"backend = open_backend({str(tiny_model)!r}, ClassifierConfig(backend='onnxruntime'))\n"
                 "size = backend.info.input_size\n"
                 "print(sorted(backend.run(np.zeros((2, size, size, 3), np.uint8))))\n")
    opted_in = tmp_path / "opted-in"
    # the user's own value wins over facecue's default: 0 turns ONNX Runtime's reports back on
    assert run_python(inference, opted_in, ORT_DISABLE_TELEMETRY="0") == "['age', 'emotion', 'gender']"
    if not (opted_in / ".cache" / ORT_QUEUE).is_dir():
        pytest.skip("this onnxruntime build keeps no telemetry: nothing to switch off")
    default = tmp_path / "default"
    assert run_python(inference, default) == "['age', 'emotion', 'gender']"
    assert not (default / ".cache" / "Microsoft").exists()


def test_nncf_sends_nothing_once_a_facecue_package_is_imported(tmp_path):
    pytest.importorskip("nncf")
    which = "import nncf.telemetry.wrapper as wrapper; print(type(wrapper.telemetry).__name__)"
    if run_python(which, tmp_path / "bare") != "NNCFTelemetry":
        pytest.skip("this nncf sends no telemetry: nothing to switch off")
    assert run_python("import calibration\n" + which, tmp_path / "facecue") != "NNCFTelemetry"
