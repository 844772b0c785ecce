"""Quiet by default (issue 14, item 7): what MediaPipe/LiteRT, OpenCV and FFmpeg write to fd 2 while the
detector loads and closes and while a source opens is hidden unless --verbose; the project's own warnings and
errors stay. Real `python -m facecue run` subprocesses on the bundled clip, a missing webcam, a broken file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "samples" / "face-demographics-walking-and-pause.mp4"
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
# printed on every run here: glog's first line, LiteRT's first inference, LiteRT closing the detector
MEDIAPIPE_LINES = ("Logging before InitGoogle", "Input tensor memory is not aligned", "DestroyAccelerator")
NO_MODEL_WARNING = "WARNING runtime.pipeline: no model given"


def facecue_run(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facecue", "run", "--headless", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)


def test_a_run_shows_no_native_lines_unless_verbose(tmp_path):
    quiet = facecue_run("--source", str(CLIP), "--max-seconds", "1.5", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    lines = quiet.stderr.splitlines()
    assert lines == [line for line in lines if line.startswith(NO_MODEL_WARNING)], quiet.stderr
    assert "frames:" in quiet.stdout  # the run's own statistics
    verbose = facecue_run("--source", str(CLIP), "--max-seconds", "1.5", "--verbose", cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert all(line in verbose.stderr for line in MEDIAPIPE_LINES), verbose.stderr
    assert NO_MODEL_WARNING in verbose.stderr


FILTER_CHILD = """
import logging, os, sys, threading
from runtime.quiet import native_stderr_filtered, set_verbose
set_verbose(sys.argv[1] == "verbose")
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
written = threading.Event()
def other_thread():
    logging.getLogger("runtime.pipeline").warning("a warning from another thread")
    written.set()
with native_stderr_filtered("a test"):
    os.write(2, b"WARNING: Logging before InitGoogle() is written to STDERR\\n")
    os.write(2, b"W0000 00:00:1796296430.460403   31376 inference_runner_litert.cc:1433] Input tensor memory "
                b"is not aligned\\n")
    threading.Thread(target=other_thread).start()
    written.wait(10)
print("done")
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_a_filtered_window_holds_back_native_log_lines_and_passes_on_the_rest(mode):
    """The detector's first inferences run in native_stderr_filtered: LiteRT's one-time alignment line may come
    at any of them, while another thread's warning, written to the same fd 2 meanwhile, must still be shown."""
    done = subprocess.run([sys.executable, "-c", FILTER_CHILD, mode], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    lines = done.stderr.splitlines()
    assert "WARNING runtime.pipeline: a warning from another thread" in lines, done.stderr
    native = [line for line in lines if "InitGoogle" in line or "not aligned" in line]
    assert len(native) == (2 if mode == "verbose" else 0), done.stderr


def broken_matroska(folder: Path) -> Path:
    path = folder / "broken.mkv"
    path.write_bytes(b"\x1aE\xdf\xa3" + b"not a matroska header" * 4)  # EBML magic, then nonsense
    return path


@pytest.mark.parametrize("source, native", [
    ("7", "VIDEOIO"),  # no camera 7: OpenCV's V4L2 and FFmpeg backends each say so, at length
    ("broken.mkv", "EBML header parsing failed"),  # FFmpeg's matroska demuxer
])
def test_a_bad_source_is_one_error_line_unless_verbose(tmp_path, source, native):
    if source.isdigit() and Path(f"/dev/video{source}").exists():
        pytest.skip(f"this machine has /dev/video{source}")
    if not source.isdigit():
        source = str(broken_matroska(tmp_path))
    quiet = facecue_run("--source", source, cwd=tmp_path)
    assert quiet.returncode == 2
    lines = quiet.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(NO_MODEL_WARNING), quiet.stderr
    assert lines[1].startswith("error: cannot open ") and source in lines[1]
    verbose = facecue_run("--source", source, "--verbose", cwd=tmp_path)
    assert verbose.returncode == 2 and native in verbose.stderr, verbose.stderr
    assert verbose.stderr.rstrip().splitlines()[-1] == lines[1]


@pytest.mark.slow
def test_gpu_check_runs_without_out_and_hides_the_optimizer_warnings(tmp_path):
    """scripts/gpu_check.py --no-gpu (the CPU rehearsal) in a fresh folder: the JSON goes to its default
    place, and onnxscript's eight "Skipping constant folding" warnings are not shown."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--no-gpu", "--models", "tiny"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "build" / "gpu_check.json").read_text())["rows"]
    assert {row["part"]: row["status"] for row in rows}["ORT CPU FP32 (reference)"] == "ok"
    assert "Skipping constant folding" not in done.stderr and "exporting ONNX: done" in done.stderr, done.stderr


def test_gpu_check_help_names_its_default_models():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--help"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "default: tiny,b16-224" in text and "tiny, b16-224, l14-336" in text


def test_an_unsupported_recording_container_is_one_error_line_unless_verbose(tmp_path):
    """--record x.webm: OpenCV's MJPG fallback does not fit WebM; FFmpeg says so in two lines, we in one."""
    record = str(tmp_path / "overlay.webm")
    quiet = facecue_run("--source", str(CLIP), "--record", record, cwd=tmp_path)
    assert quiet.returncode == 2
    assert quiet.stderr.splitlines() == [f"error: --record {record}: OpenCV cannot write this video file "
                                         "(try .mp4 or .avi)"], quiet.stderr  # before the run: no other line
    verbose = facecue_run("--source", str(CLIP), "--record", record, "--verbose", cwd=tmp_path)
    assert verbose.returncode == 2 and "[webm @" in verbose.stderr, verbose.stderr
