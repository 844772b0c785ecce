"""`python -m calibration int8 --engine nncf` on the tiny exported model with real face crops: an OpenVINO IR
that carries the facecue document and runs in the runtime's OpenVINO backend; bad output names exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.__main__ import main
from helpers_faces import face_patches
from runtime.backends import describe, open_backend
from runtime.config import ClassifierConfig
from runtime.metadata import read_model_info

pytest.importorskip("nncf")
pytest.importorskip("openvino")

SMALL = """
int8:
  calibration_crops: 16
  held_out_crops: 8
  min_calibration_crops: 8
  min_held_out_crops: 4
  speed_batches: [1]
  speed_repeats: 1
"""


def chips() -> np.ndarray:
    faces = [f for face in face_patches(64) for f in (face, face[:, ::-1])]
    return np.stack([np.clip(np.roll(face, shift, axis=1) * gain, 0, 255).astype(np.uint8)
                     for face in faces for shift in (0, 4) for gain in (0.9, 1.1)])  # 24 distinct crops


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("nncf-chips")
    for index, chip in enumerate(chips()):
        cv2.imwrite(str(folder / f"{index:02d}.png"), cv2.cvtColor(chip, cv2.COLOR_RGB2BGR))
    config = folder.parent / "nncf-calibration.yaml"
    config.write_text(SMALL)
    return folder, config


@pytest.fixture(scope="module")
def nncf_model(tiny_model, inputs, tmp_path_factory) -> Path:
    folder, config = inputs
    out = tmp_path_factory.mktemp("nncf") / "tiny.nncf.xml"
    assert main(["--config", str(config), "int8", "--engine", "nncf", "--model", str(tiny_model), "--crops",
                 str(folder), "--out", str(out)]) == 0
    return out


def test_nncf_ir_carries_the_document_and_runs_in_the_openvino_backend(tiny_model, nncf_model, tmp_path):
    assert nncf_model.is_file() and nncf_model.with_suffix(".bin").is_file()
    assert "FakeQuantize" in nncf_model.read_text()
    fp32 = read_model_info(tiny_model)
    backend = open_backend(nncf_model, ClassifierConfig(intra_op_threads=1, openvino_cache_dir=str(tmp_path)))
    info = backend.info
    assert info.precision == "int8-nncf" and info.document["quantization"]["engine"] == "nncf"
    assert info.document["quantization"]["calibration_crops"] == 16
    for key, value in fp32.document.items():  # nothing dropped, only precision changed
        assert key in ("precision",) or info.document[key] == value
    assert describe(backend).startswith("openvino CPU ") and "(model int8-nncf)" in describe(backend)
    assert "(auto: an OpenVINO IR)" in describe(backend)
    images = chips()[:, 16:48, 16:48].copy()  # the tiny model's 32 px input
    want = open_backend(tiny_model, ClassifierConfig(backend="onnxruntime", intra_op_threads=1)).run(images)
    got = backend.run(images)
    for task, values in got.items():
        assert values.shape == want[task].shape
        # the same function, coarsely (16 calibration crops, INT8 attention too, a tiny model): its error is far
        # below how much FP32's logits differ between faces, and top-1 mostly agrees
        error, between_faces = np.abs(values - want[task]).mean(), np.abs(want[task] - want[task][::-1]).mean()
        assert error < 0.5 * between_faces, (task, error, between_faces)
        assert (values.argmax(1) == want[task].argmax(1)).mean() >= 0.75, task


def test_nncf_report_beside_the_model(nncf_model, capsys):
    report = json.loads(nncf_model.with_name("tiny.nncf.report.json").read_text())
    assert report["model"] == "tiny.nncf.xml" and report["held_out_crops"] == 8
    assert report["quantized_nodes"] > 0 and {a["task"] for a in report["agreement"]} == {"age", "gender", "emotion"}
    assert "SmoothQuant alpha 0.95" in report["calibrator"]


def test_nncf_output_must_be_an_ir_and_nothing_is_written(tiny_model, inputs, tmp_path, capsys):
    folder, config = inputs
    out = tmp_path / "tiny.nncf.onnx"
    assert main(["--config", str(config), "int8", "--engine", "nncf", "--model", str(tiny_model), "--crops",
                 str(folder), "--out", str(out)]) == 2
    assert "the NNCF model is an OpenVINO IR" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
