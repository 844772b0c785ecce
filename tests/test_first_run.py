"""First run as a new user: the facecue command, profiles by name from any folder, the README's Python example
from another folder, recordings at the source's frame rate, nested/empty face folders, and every command's
bad input (one line, exit 2) and Ctrl-C (a real SIGINT, exit 130, no traceback)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "samples" / "walking-and-pause-demo.mp4"
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def python(*args, cwd, timeout=180, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def test_facecue_help_and_version(tmp_path):
    done = python("-m", "facecue", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "commands:" in done.stdout and "example:" in done.stdout
    done = python("-m", "facecue", "--version", cwd=tmp_path)
    assert done.returncode == 0 and re.fullmatch(r"facecue \d+\.\d+\.\d+\S*\n", done.stdout)


@pytest.mark.parametrize("command", ["run", "bench", "calibrate"])
def test_subcommand_help_ends_with_an_example(tmp_path, command):
    done = python("-m", "facecue", command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    after_options = " ".join(done.stdout.split()).split("options:")[-1]
    assert "example: facecue " in after_options and after_options.rstrip().endswith(done.stdout.split()[-1])


def test_profiles_by_name_from_any_folder(tmp_path):
    code = ("from runtime.config import load_config; from training.config import load_config as train; "
            "a = load_config('laptop'); b = load_config('configs/laptop.yaml'); "
            "print(a == b, a.classifier.intra_op_threads)")
    done = python("-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "True"
    done = python("-c", "from runtime.config import load_config; load_config('no-such-profile')", cwd=tmp_path)
    assert "config file not found: no-such-profile" in done.stderr


def test_quick_start_without_a_model_on_the_demo_clip(tmp_path):
    jsonl = tmp_path / "run.jsonl"
    done = python("-m", "facecue", "run", "--source", str(DEMO), "--headless", "--mode", "fast", "--jsonl", str(jsonl),
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in jsonl.read_text().splitlines() if '"type": "event"' in line]
    assert events.count("appeared") == 3 and events.count("disappeared") == 3


def readme_python_example() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("From Python (`runtime.pipeline.Pipeline`)")
    return text[text.index("```python\n", start) + len("```python\n"):text.index("```", text.index("```python\n", start) + 9)]


@pytest.mark.slow
def test_readme_python_example_from_another_folder_gives_attributes_for_everyone(tiny_model, tmp_path):
    code = readme_python_example()
    assert 'load_config("laptop"' in code and "samples/walking-and-pause-demo.mp4" in code
    code = (code.replace("samples/walking-and-pause-demo.mp4", str(DEMO))
                .replace("classifier.model=build/model.onnx", f"classifier.model={tiny_model}"))
    done = python("-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    hellos = re.findall(r"^hello (\d+)$", done.stdout, re.M)
    ready = re.findall(r"^(\d+) \d+ \{", done.stdout, re.M)
    assert len(hellos) == 3 and sorted(ready) == sorted(hellos), done.stdout
    assert len(re.findall(r"^bye \d+$", done.stdout, re.M)) == 3


@pytest.mark.parametrize("clip", ["classroom.mp4", "face-demographics-walking.mp4"])
def test_recording_has_the_sources_frame_rate(tmp_path, clip):
    source = REPO / "samples" / clip
    video = tmp_path / "overlay.mp4"
    done = python("run_camera.py", "--source", str(source), "--mode", "fast", "--headless", "--record", str(video),
                  cwd=REPO)
    assert done.returncode == 0, done.stderr
    recorded, original = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(source))
    assert recorded.get(cv2.CAP_PROP_FPS) == pytest.approx(original.get(cv2.CAP_PROP_FPS), abs=0.01)
    assert recorded.get(cv2.CAP_PROP_FRAME_COUNT) == original.get(cv2.CAP_PROP_FRAME_COUNT)


def test_recorder_measures_a_live_rate_and_falls_back_to_mp4v(tmp_path):
    from runtime.overlay import VideoRecorder

    recorder = VideoRecorder(tmp_path / "live.mp4")
    assert recorder.codec in ("avc1", "mp4v")  # H.264 only where this OpenCV build can encode it
    image = np.zeros((48, 64, 3), np.uint8)
    for index in range(20):
        recorder.write(image, 100.0 + index / 8.0)  # a camera delivering 8 frames per second
    recorder.close()
    assert cv2.VideoCapture(str(tmp_path / "live.mp4")).get(cv2.CAP_PROP_FPS) == pytest.approx(8.0, abs=0.01)


def write_chip(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((40, 40, 3), 128, np.uint8))


def test_crops_in_subfolders_are_found_and_an_empty_folder_is_named(tmp_path):
    from runtime.faces import FacesError, load_face_crops

    write_chip(tmp_path / "crops" / "happy" / "a.png")
    write_chip(tmp_path / "crops" / "sad" / "deeper" / "b.jpg")
    faces = load_face_crops(crops_dir=tmp_path / "crops", size=32)
    assert faces.names == ["happy/a.png", "sad/deeper/b.jpg"] and faces.crops.shape == (2, 32, 32, 3)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FacesError, match=r"no image files in .*empty or its subfolders"):
        load_face_crops(crops_dir=tmp_path / "empty", size=32)


def assert_one_error_line(done, *needles):
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(needle in errors[0] for needle in needles), done.stderr


def test_bench_bad_input_outside_the_repository(tmp_path, tiny_model):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert_one_error_line(python("-m", "runtime.bench", "--source", str(DEMO), "--model", str(bad), cwd=tmp_path),
                          "bad.onnx")
    assert_one_error_line(python("-m", "runtime.bench", "--source", "nope.mp4", "--model", str(tiny_model),
                                 "--seconds", "1", cwd=tmp_path), "nope.mp4")


def test_verify_empty_crop_folder_is_bad_input(tmp_path, tiny_model):
    pytest.importorskip("torch")
    from export.random_checkpoint import write_random_checkpoint

    weights, adapters = write_random_checkpoint("pe-core-test-tiny", tmp_path / "rc", rank=4)
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    done = python("-m", "export.verify", str(tiny_model), "--backbone", "pe-core-test-tiny", "--weights",
                  str(weights), "--adapters", str(adapters), "--crops", str(tmp_path / "empty"), cwd=tmp_path)
    assert_one_error_line(done, "no image files in", "empty")


@pytest.mark.parametrize("command, needle", [
    (["-m", "export.fp16", "{model}", "--crops", "{empty}"], "no image files in"),
    (["-m", "calibration", "int8", "--model", "{model}", "--crops", "{empty}"], "no image files in"),
    (["-m", "calibration", "temperature", "--model", "{model}", "--labels", "{labels}", "--crops", "{empty}"],
     "none of the 2 labelled files is under"),
    (["-m", "training.evaluate", "--onnx", "{model}", "--labels", "{labels}", "--crops", "{empty}"],
     "2 image file(s) not found under"),
])
def test_nothing_to_read_is_one_line_everywhere(tmp_path, tiny_model, command, needle):
    """--crops/--images folders with no image (only subfolders), or without the labelled files: one line, exit 2."""
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    (tmp_path / "labels.csv").write_text("path,gender_name\nsub/a.png,female\nsub/b.png,male\n")
    paths = {"model": tiny_model, "empty": tmp_path / "empty", "labels": tmp_path / "labels.csv"}
    assert_one_error_line(python(*[part.format(**paths) for part in command], cwd=tmp_path), needle, "empty")


def test_random_checkpoint_refuses_another_backbones_folder(tmp_path):
    pytest.importorskip("torch")
    from export.adapters import RANDOM_MARKER_FILE
    from export.cli import run_main
    from export.random_checkpoint import main as random_main

    out = tmp_path / "rc"
    assert run_main(random_main, ["--backbone", "pe-core-test-tiny", "--out", str(out), "--rank", "4"]) == 0
    adapters = out / "RANDOM-TEST-TINY-dora-adapters"
    assert (adapters / RANDOM_MARKER_FILE).is_file()
    assert oct((adapters / "custom_layers.pt").stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    marker = adapters / RANDOM_MARKER_FILE  # as if another backbone's files were written under this name
    marker.write_text(marker.read_text().replace("backbone: pe-core-test-tiny", "backbone: pe-core-b16-224"))
    before = (adapters / "custom_layers.pt").read_bytes()
    assert run_main(random_main, ["--backbone", "pe-core-test-tiny", "--out", str(out), "--rank", "4"]) == 2
    assert (adapters / "custom_layers.pt").read_bytes() == before


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def interrupt_after(args, marker: str, cwd, timeout=240):
    """Start `python args`, wait for `marker` on stdout/stderr, send a real SIGINT, return (rc, output)."""
    process = subprocess.Popen([sys.executable, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = []
    deadline = time.monotonic() + timeout
    try:
        for line in process.stdout:
            output.append(line)
            if marker in line:
                time.sleep(0.5)
                process.send_signal(signal.SIGINT)
                break
            assert time.monotonic() < deadline, "".join(output)
        rest, _ = process.communicate(timeout=60)
        output.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, "".join(output)


@pytest.mark.slow
def test_ctrl_c_in_bench_is_130_without_traceback(tmp_path, tiny_model):
    rc, output = interrupt_after(["-m", "runtime.bench", "--source", str(DEMO), "--model", str(tiny_model),
                                  "--seconds", "30", "--json", str(tmp_path / "b.json")], "pipeline, fast mode",
                                 tmp_path)
    assert rc == 130 and "Traceback" not in output and "interrupted" in output, output
    assert not (tmp_path / "b.json").exists()


@pytest.mark.slow
def test_ctrl_c_in_export_is_130_without_traceback(tmp_path):
    pytest.importorskip("torch")
    from export.random_checkpoint import write_random_checkpoint

    weights, adapters = write_random_checkpoint("pe-core-t16-384", tmp_path / "rc", rank=4)
    rc, output = interrupt_after(["-m", "facecue", "export", "--backbone", "pe-core-t16-384", "--weights",
                                  str(weights), "--adapters", str(adapters), "--out", str(tmp_path / "m.onnx")],
                                 "exporting ONNX", tmp_path)
    assert rc == 130 and "Traceback" not in output and "interrupted" in output, output
    assert not (tmp_path / "m.onnx").exists()


def test_output_piped_into_a_reader_that_has_gone_is_not_a_traceback():
    # `facecue --help | head -1` once head has exited: every write meets a pipe with no reader
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "facecue", "--help"], stdout=write_end, stderr=subprocess.PIPE,
                              cwd=REPO, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
