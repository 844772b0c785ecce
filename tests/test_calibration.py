"""calibration/: INT8 QDQ on the tiny exported model with real face crops, and every bad-input case.

Faces: the astronaut and the two people of a sample clip (tests/helpers_faces), with flips, shifts and
brightness changes for enough distinct crops; written as chips (`--crops`) or scenes (`--images`).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from skimage import data

from calibration.__main__ import main
from calibration.graph import QUANTIZED_OP_TYPES, node_scopes, quantized_nodes
from helpers_faces import TWO_PEOPLE_CLIP, background, clip_frame_rgb, face_patches
from runtime.metadata import read_model_info

SMALL = """
int8:
  calibration_crops: 20
  held_out_crops: 10
  min_calibration_crops: 8
  min_held_out_crops: 4
  chunk_size: 4
  speed_repeats: 2
"""


def write_rgb(path: Path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def chips_dir(tmp_path_factory) -> Path:
    """36 distinct face chips: 3 real faces × flip × 2 shifts × 3 brightness levels."""
    folder = tmp_path_factory.mktemp("chips")
    for face_index, face in enumerate(face_patches(96)):
        for flip in (False, True):
            for shift in (0, 6):
                for gain in (0.8, 1.0, 1.2):
                    chip = face[:, ::-1] if flip else face
                    chip = np.roll(chip, shift, axis=1)[8:88, 8:88]
                    chip = np.clip(chip.astype(np.float32) * gain, 0, 255).astype(np.uint8)
                    write_rgb(folder / f"f{face_index}-{int(flip)}-{shift}-{gain}.png", chip)
    return folder


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "calibration.yaml"
    path.write_text(SMALL)
    return path


@pytest.fixture(scope="module")
def int8_model(tiny_model, chips_dir, config_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "tiny.int8.onnx"
    assert main(["--config", str(config_file), "int8", "--model", str(tiny_model), "--crops", str(chips_dir),
                 "--out", str(out)]) == 0
    return out


def test_int8_model_keeps_metadata_and_loads_in_the_runtime(tiny_model, int8_model, chips_dir):
    from runtime.backends.onnxruntime import OnnxRuntimeBackend
    from runtime.config import ClassifierConfig

    fp32, int8 = read_model_info(tiny_model), read_model_info(int8_model)
    assert int8.precision == "int8-qdq" and fp32.precision == "fp32"
    for key, value in fp32.document.items():  # nothing dropped, only precision changed
        assert key == "precision" or int8.document[key] == value
    assert int8.document["quantization"]["calibration_crops"] == 20
    backend = OnnxRuntimeBackend(int8_model, ClassifierConfig(intra_op_threads=1))
    chips = np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], (32, 32), interpolation=cv2.INTER_AREA)
                      for p in sorted(chips_dir.iterdir())[:4]])
    logits = backend.run(chips)
    assert {name: value.shape for name, value in logits.items()} == {"age": (4, 9), "gender": (4, 2), "emotion": (4, 7)}


def test_only_the_linear_layers_of_the_blocks_are_quantized(tiny_model, int8_model):
    model = onnx.load(str(int8_model))
    weights = {init.name for init in model.graph.initializer}
    quantized = quantized_nodes(model)
    assert quantized, "no node runs on dequantized inputs"
    for node in quantized:
        assert node.op_type in ("MatMul", "Gemm"), node.op_type
        scopes = node_scopes(node)
        assert any(".blocks." in s for s in scopes) and not any("attn_pool" in s or s.startswith("heads.") for s in scopes)
    # every block linear is quantized (2 blocks × qkv, proj, fc1, fc2), and each has a quantized weight
    assert len(quantized) == 8
    dequantized_weights = [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    assert len(dequantized_weights) == 8
    # attention-score MatMuls (no weight), residual Adds, LayerNorm, Softmax stay float
    float_ops = {n.op_type for n in model.graph.node if n not in quantized and n.op_type not in QUANTIZED_OP_TYPES}
    assert {"Add", "LayerNormalization", "Softmax", "MatMul"} <= float_ops
    source_matmuls = [n for n in onnx.load(str(tiny_model)).graph.node if n.op_type == "MatMul"]
    assert len([n for n in model.graph.node if n.op_type == "MatMul"]) == len(source_matmuls)


def test_report_and_calibration_table(int8_model, capsys):
    report = json.loads(int8_model.with_name("tiny.int8.report.json").read_text())
    assert [row["task"] for row in report["agreement"]] == ["age", "gender", "emotion"]
    assert report["calibration_crops"] == 20 and report["held_out_crops"] == 10
    for row in report["agreement"]:
        assert 0.0 <= row["top1_agreement"] <= 1.0 and row["samples"] == 10 and 0 <= row["max_prob_diff"] < 1
    assert [s["batch"] for s in report["speed"]] == [1, 8] and all(s["int8_crops_per_s"] > 0 for s in report["speed"])
    assert report["peak_rss_mb"] > 0
    assert report["pass"] == (report["agreement_pass"] and report["faster_pass"])
    table = int8_model.with_name("tiny.int8.trt-table")
    ranges = json.loads((table / "calibration.json").read_text())
    fp32_tensors = {i for n in onnx.load(str(int8_model)).graph.node if n.op_type == "QuantizeLinear" for i in n.input[:1]}
    assert set(ranges) == fp32_tensors  # exactly the quantized activations, named as in the FP32 graph
    assert (table / "calibration.flatbuffers").stat().st_size > 0
    assert not (table / "calibration.cache").exists()


def test_int8_from_images_runs_the_detector(tiny_model, config_file, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_rgb(images / "astronaut.png", data.astronaut())
    write_rgb(images / "astronaut-flip.png", data.astronaut()[:, ::-1])
    for index in range(0, 40, 10):
        frame = clip_frame_rgb(TWO_PEOPLE_CLIP, index)
        write_rgb(images / f"frame{index:03}.png", frame)
        write_rgb(images / f"frame{index:03}-flip.png", frame[:, ::-1])
    out = tmp_path / "m.int8.onnx"
    assert main(["--config", str(config_file), "int8", "--model", str(tiny_model), "--images", str(images),
                 "--out", str(out), "--calibrator", "minmax"]) == 0
    report = json.loads(out.with_name("m.int8.report.json").read_text())
    assert report["calibrator"] == "minmax" and report["calibration_crops"] + report["held_out_crops"] >= 12


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_too_few_faces_is_named_and_writes_nothing(tiny_model, config_file, tmp_path, capsys):
    chips = tmp_path / "chips"
    chips.mkdir()
    for index, face in enumerate(face_patches(64)):
        write_rgb(chips / f"{index}.png", face)
    out_dir = tmp_path / "out"
    assert main(["--config", str(config_file), "int8", "--model", str(tiny_model), "--crops", str(chips),
                 "--out", str(out_dir / "m.int8.onnx")]) == 2
    assert "only 3 face crops" in capsys.readouterr().err
    assert not out_dir.exists() or outputs(out_dir) == []


def test_images_without_faces_are_named(tiny_model, config_file, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    write_rgb(images / "rocket.png", background())
    assert main(["--config", str(config_file), "int8", "--model", str(tiny_model), "--images", str(images),
                 "--out", str(tmp_path / "m.int8.onnx")]) == 2
    assert "no faces found" in capsys.readouterr().err
    assert outputs(tmp_path) == ["images"]


def test_already_quantized_model_is_refused(int8_model, chips_dir, config_file, tmp_path, capsys):
    assert main(["--config", str(config_file), "int8", "--model", str(int8_model), "--crops", str(chips_dir),
                 "--out", str(tmp_path / "again.onnx")]) == 2
    assert "already quantized" in capsys.readouterr().err
    assert outputs(tmp_path) == []


def test_missing_model_and_bad_config_are_named(chips_dir, tmp_path, capsys):
    assert main(["int8", "--model", str(tmp_path / "nope.onnx"), "--crops", str(chips_dir)]) == 2
    assert "model file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("int8:\n  calibratr: entropy\n")
    assert main(["--config", str(bad), "int8", "--model", "x.onnx", "--crops", str(chips_dir)]) == 2
    assert "int8.calibratr: unknown key" in capsys.readouterr().err


def test_report_passes_only_when_int8_agrees_and_is_faster():
    from calibration.compare import Speed, TaskAgreement
    from calibration.report import Int8Report

    def report(agree: float, batch8_int8: float) -> Int8Report:
        return Int8Report("m.int8.onnx", "m.onnx", "entropy", 20, 10, 8, {}, [TaskAgreement("age", agree, 10, 10, 0.01)],
                          [Speed(1, 10.0, 5.0), Speed(8, 10.0, batch8_int8)], 100.0, min_agreement=0.95)

    assert report(1.0, 20.0).passes and report(1.0, 20.0).table().endswith("PASS")
    assert "top-1 agreement below 95%" in report(0.9, 20.0).table() and not report(0.9, 20.0).passes
    slow = report(1.0, 9.0)  # slower at batch 1 is allowed; at the largest batch it is not
    assert not slow.passes and "INT8 not faster than FP32 at batch 8" in slow.table()
    assert json.loads(slow.to_json())["faster_pass"] is False
