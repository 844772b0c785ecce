"""`python -m export.bench_backends` end to end on the tiny exported model and real face chips: one worker
process per engine and round, speed-ups taken against the same round's ONNX Runtime FP32 run, agreement on the
chips, a missing model file skipped and said so, bad input one line and exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from helpers_faces import face_patches
from export.bench_backends import main

pytest.importorskip("openvino")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bench-chips")
    for index, face in enumerate(face_patches(64)):
        for flip in (0, 1):
            chip = face[:, ::-1] if flip else face
            cv2.imwrite(str(folder / f"{index}-{flip}.png"), cv2.cvtColor(chip, cv2.COLOR_RGB2BGR))
    return folder


def test_engines_in_rounds_ratios_per_round_and_agreement(tiny_model, chips, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--models", str(tiny_model), "--crops", str(chips), "--engines", "ort-fp32,ov-f32,ort-int8",
                 "--batches", "1", "2", "--rounds", "2", "--seconds", "0.05", "--threads", "1",
                 "--agreement-crops", "6", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    rows = {(row["engine"], row["batch"]): row for row in summary["rows"]}
    assert set(rows) == {(engine, batch) for engine in ("ort-fp32", "ov-f32") for batch in (1, 2)}
    assert summary["skipped"] == [f"ort-int8 on {tiny_model.name}: {tiny_model.stem}.int8.onnx not found"]
    for batch in (1, 2):
        baseline, mine = rows["ort-fp32", batch], rows["ov-f32", batch]
        assert baseline["vs_ort_fp32_rounds"] == [1.0, 1.0]
        want = [a / b for a, b in zip(mine["crops_per_s_rounds"], baseline["crops_per_s_rounds"])]
        assert mine["vs_ort_fp32_rounds"] == pytest.approx(want)
        assert mine["vs_ort_fp32"] == pytest.approx(sum(want) / 2)  # the median of two rounds
        assert mine["agreement"]["samples"] == 6
        assert mine["agreement"]["max_prob_diff"] < 1e-3  # f32 on both engines
        assert mine["open_s_cached"] is not None  # round 2 reopened from the OpenVINO cache
    assert set(summary["matmul_gflops"]) >= {"f32"} and len(summary["matmul_rounds"]) == 2
    assert "skipped: ort-int8" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tiny_model, tmp_path, capsys):
    assert main(["--models", str(tiny_model), "--crops", str(tmp_path / "nowhere")]) == 2
    assert main(["--models", str(tiny_model), "--crops", str(tmp_path), "--engines", "ort-fp64"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "no folder" in errors[0] and "ort-fp64" in errors[1]


def test_core_sharing_benchmark_runs_each_variant_in_its_own_process_with_the_detector(tiny_model, tmp_path, capsys):
    """scripts/bench_core_sharing.py on the tiny model: the backend's own variant is unpinned, the 'before' one
    pinned, each in a worker process beside the real detector; a missing model is one line and exit 2."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_core_sharing", REPO / "scripts" / "bench_core_sharing.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "sharing.json"
    pinned, backends = "pinned, static (OpenVINO's default)", "unpinned, auto (the backend's)"
    assert script.main(["--model", str(tiny_model), "--rounds", "1", "--seconds", "1", "--pause", "0.05",
                        "--variants", pinned, backends, "--json", str(out)]) == 0
    variants = json.loads(out.read_text())["variants"]
    assert [r["pinning"] for r in variants[pinned]["rounds"]] == [True]
    assert [r["pinning"] for r in variants[backends]["rounds"]] == [False]
    assert all(0 < v["p50_ms"] <= v["p95_ms"] for v in variants.values())
    assert backends in capsys.readouterr().out
    assert script.main(["--model", str(tmp_path / "missing.onnx")]) == 2
    assert "model not found" in capsys.readouterr().err
