"""The command line: headless runs as a user types them (subprocess), JSONL content, and bad input."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import onnx
import pytest

import run_camera

REPO = Path(__file__).resolve().parents[1]
CLIP = "samples/face-demographics-walking-and-pause.mp4"


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "run_camera.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def random_weights_copy(model_path: Path, directory: Path) -> Path:
    model = onnx.load(str(model_path))
    for prop in model.metadata_props:
        if prop.key == "facecue":
            document = json.loads(prop.value)
            document["random_weights"] = True
            prop.value = json.dumps(document)
    path = directory / "random.onnx"
    onnx.save(model, str(path))
    return path


def test_readme_quick_start_runs_without_a_model():
    done = run_cli("--source", CLIP, "--headless")
    assert done.returncode == 0, done.stderr
    assert "no model given" in done.stderr and "python -m export" in done.stderr
    assert "frames: " in done.stdout and "end-to-end" in done.stdout


def test_fast_run_with_model_writes_jsonl_and_recording(tiny_model, tmp_path):
    model = random_weights_copy(tiny_model, tmp_path)
    jsonl, video = tmp_path / "run.jsonl", tmp_path / "overlay.mp4"
    done = run_cli("--source", CLIP, "--model", str(model), "--mode", "fast", "--headless", "--jsonl", str(jsonl),
                   "--record", str(video), "--set", "policy.interval=0.02", "--set", "events.min_observations=2",
                   "--set", "classifier.intra_op_threads=1")
    assert done.returncode == 0, done.stderr
    assert "RANDOM WEIGHTS — not real cues" in done.stderr
    assert "RANDOM WEIGHTS — not real cues" in done.stdout.split("frames: ")[0]  # the statistics' model line
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert records[0]["type"] == "run" and records[0]["random_weights"] is True
    assert records[-1]["type"] == "stats" and records[-1]["frames_processed"] == 41
    assert all(record["warning"] == "RANDOM WEIGHTS — not real cues" for record in records)

    frames = [r for r in records if r["type"] == "frame"]
    assert [f["index"] for f in frames] == list(range(41))
    tracks = [t for f in frames for t in f["tracks"]]
    assert tracks and all(set(t) == {"id", "box", "state", "detected", "attributes"} and len(t["box"]) == 4 for t in tracks)
    classified = [t for t in tracks if t["attributes"]["observations"] > 0]
    assert classified and set(classified[0]["attributes"]["tasks"]) == {"age", "gender", "emotion"}

    events = [r for r in records if r["type"] == "event"]
    kinds = Counter((e["event"], e["track_id"]) for e in events)
    appeared = {track for (kind, track) in kinds if kind == "appeared"}
    assert appeared and appeared == {track for (kind, track) in kinds if kind == "disappeared"}
    assert any(e["event"] == "attributes_ready" for e in events)
    assert all(e["timestamp"] in {f["timestamp"] for f in frames} for e in events)

    recorded = cv2.VideoCapture(str(video))
    assert int(recorded.get(cv2.CAP_PROP_FRAME_COUNT)) == 41
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


@pytest.mark.parametrize("make_args, message", [
    (lambda d: ["--set", "classifier.max_batch=x"], "classifier.max_batch: expected int, got 'x'"),
    (lambda d: ["--config", str(d / "bad.yaml")], "detector.min_confidance: unknown key"),
    (lambda d: ["--model", str(d / "missing.onnx")], "model file not found"),
    (lambda d: ["--model", str(d / "plain.onnx")], "has no 'facecue' metadata"),
    (lambda d: ["--source", str(d / "missing.mp4")], "missing.mp4' does not exist"),
    (lambda d: ["--record", str(d / "gone" / "out.mp4")], "does not exist"),
    (lambda d: ["--record", str(d / "out.txt"), "--jsonl", str(d / "run.jsonl")], "OpenCV cannot write"),
    (lambda d: ["--jsonl", str(d / "gone" / "run.jsonl")], "cannot write JSON lines"),
])
def test_bad_input_is_named_and_exits_2(tmp_path, capsys, make_args, message):
    (tmp_path / "bad.yaml").write_text("detector:\n  min_confidance: 0.5\n")
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "plain",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    status = run_camera.main(["--source", CLIP, "--headless", *make_args(tmp_path)])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not [p.name for p in tmp_path.iterdir() if p.name not in ("bad.yaml", "plain.onnx")]  # nothing half-written


def test_ctrl_c_shuts_down_cleanly_and_pairs_every_appeared(tmp_path):
    """SIGINT once the first track has appeared (lines reach the partial file as they are written)."""
    import signal
    import time

    jsonl = tmp_path / "run.jsonl"
    process = subprocess.Popen([sys.executable, "run_camera.py", "--source", CLIP, "--headless", "--jsonl", str(jsonl)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".run.jsonl.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (partial.exists() and '"appeared"' in partial.read_text()):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # the clip plays at 12 fps for 3.4 s: interrupt it early
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "interrupted" in err and "frames: " in out
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert records[-1]["type"] == "stats" and 0 < records[-1]["frames_processed"] < 41
    events = [(r["event"], r["track_id"]) for r in records if r["type"] == "event"]
    appeared = sorted(t for kind, t in events if kind == "appeared")
    assert appeared and appeared == sorted(t for kind, t in events if kind == "disappeared")
