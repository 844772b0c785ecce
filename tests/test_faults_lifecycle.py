"""Lifecycle faults made for real (issue 10, items 4, 5, 8): signals sent to a run_camera.py subprocess
mid-run and during start-up, callbacks that raise, sleep, stop the pipeline or exit, and sinks that cannot
keep up. Every test checks what a robot relies on: every `appeared` paired, files complete and readable."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import pytest

from runtime.config import load_config
from runtime.jsonl import JsonlWriter
from runtime.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
CLIP = "samples/face-demographics-walking-and-pause.mp4"  # 41 frames, 12 fps, people walk in and out


def start_cli(*args, script: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-c", script] if script else [sys.executable, "run_camera.py"]
    return subprocess.Popen([*command, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_handler(pid: int, number: int, timeout: float = 30.0) -> None:
    """Until process `pid` catches signal `number` (Linux: the SigCgt mask in /proc/PID/status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught >> (number - 1) & 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never installed a handler for signal {number}")


def wait_for_partial(path: Path, text: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{text!r} never reached {path}: {process.communicate()[1][-2000:]}")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_paired(events: list[tuple[str, int]]) -> None:
    appeared = sorted(track for kind, track in events if kind == "appeared")
    assert appeared and appeared == sorted(track for kind, track in events if kind == "disappeared")


def video_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} cannot be opened (no moov atom?)"
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames


def assert_files_complete(jsonl: Path, video: Path | None) -> dict:
    records = read_jsonl(jsonl)
    stats = records[-1]
    assert records[0]["type"] == "run" and stats["type"] == "stats"
    assert_paired([(r["event"], r["track_id"]) for r in records if r["type"] == "event"])
    frames = [r for r in records if r["type"] == "frame"]
    assert len(frames) + stats["sink_frames_dropped"] == stats["frames_processed"]  # none lost silently
    assert stats["sink_frames_dropped"] == 0  # a JSONL writer keeps up with a 12 fps clip
    if video is not None:
        assert video_frames(video) == len(frames)
    assert not list(jsonl.parent.glob(".*partial*"))
    return stats


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_mid_run_closes_every_track_and_finalises_the_files(tmp_path, stop_signal):
    jsonl, video = tmp_path / "run.jsonl", tmp_path / "run.mp4"
    process = start_cli("--source", CLIP, "--headless", "--jsonl", str(jsonl), "--record", str(video))
    wait_for_partial(tmp_path / ".run.jsonl.partial", '"appeared"', process)
    process.send_signal(stop_signal)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err and f"interrupted ({stop_signal.name})" in err
    assert "frames: " in out and "sinks: 0 frames" in out  # the statistics are printed
    stats = assert_files_complete(jsonl, video)
    assert 0 < stats["frames_processed"] < 41


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_during_start_up_exits_without_a_traceback(tmp_path, stop_signal):
    jsonl = tmp_path / "run.jsonl"
    process = start_cli("--source", CLIP, "--headless", "--jsonl", str(jsonl))
    wait_for_handler(process.pid, stop_signal)  # before this, the signal would meet Python's default action
    time.sleep(0.2)  # now inside start-up: the imports of OpenCV, ONNX Runtime and MediaPipe take longer
    process.send_signal(stop_signal)
    out, err = process.communicate(timeout=60)
    assert "Traceback" not in err
    assert process.returncode == 128 + stop_signal, err
    assert "interrupted during start-up" in err
    assert list(tmp_path.iterdir()) == []  # nothing was opened, nothing half-written


INTERRUPTED_EXTENSION_IMPORT = textwrap.dedent("""
    import importlib.abc, importlib.machinery, os, signal, sys, time
    class InterruptedInit(importlib.abc.Loader):  # as a C extension reports a signal during its init
        def create_module(self, spec):
            return None
        def exec_module(self, module):
            try:
                os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, through run's own handler
                time.sleep(5)
            except KeyboardInterrupt as interrupt:
                raise ImportError("initialization failed") from interrupt
    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            return importlib.machinery.ModuleSpec(name, InterruptedInit()) if name == "onnxruntime" else None
    sys.meta_path.insert(0, Finder())
    from runtime.run import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_signal_inside_an_extensions_import_is_still_an_interrupt(tmp_path):
    """SIGINT while a C extension initialises surfaces as ImportError("initialization failed") raised from the
    KeyboardInterrupt (seen with onnxruntime under load): still exit 130, no traceback."""
    process = start_cli("--source", CLIP, "--headless", "--jsonl", str(tmp_path / "run.jsonl"),
                        script=INTERRUPTED_EXTENSION_IMPORT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert "interrupted during start-up" in err
    assert list(tmp_path.iterdir()) == []


SLOW_CALLBACK_RUN = textwrap.dedent("""
    import sys, time
    import runtime.pipeline as pipeline
    opened = pipeline.Pipeline.__init__
    def with_slow_callback(self, *args, **kwargs):
        opened(self, *args, **kwargs)
        self.on("disappeared", lambda event: time.sleep(30))  # a callback stuck far longer than a launch system waits
    pipeline.Pipeline.__init__ = with_slow_callback
    from runtime.run import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_second_signal_forces_a_quick_exit_that_still_finalises_the_files(tmp_path):
    jsonl, video = tmp_path / "run.jsonl", tmp_path / "run.mp4"
    process = start_cli("--source", CLIP, "--headless", "--jsonl", str(jsonl), "--record", str(video),
                        script=SLOW_CALLBACK_RUN)
    wait_for_partial(tmp_path / ".run.jsonl.partial", '"appeared"', process)
    process.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    assert process.poll() is None  # the first stop waits for the stuck `disappeared` callback
    second = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert time.monotonic() - second < 10.0
    assert process.returncode == 0 and "Traceback" not in err, err
    assert "stopping now" in err and "lifecycle events were not delivered: shutdown forced" in err
    assert_files_complete(jsonl, video)  # the sinks got every disappeared, whatever the callbacks do


def fast_config(**overrides):
    settings = [f"source.uri={CLIP}", "source.mode=fast", "overlay.show=false"]
    return load_config(None, settings + [f"{key}={value}" for key, value in overrides.items()])


class Recorder:
    """Records every event a callback receives, per kind."""

    def __init__(self, pipeline: Pipeline):
        self.events: list[tuple[str, int]] = []
        for kind in ("appeared", "attributes_ready", "attribute_changed", "disappeared"):
            pipeline.on(kind, self.record)

    def record(self, event) -> None:
        self.events.append((event.kind.value, event.track_id))


def test_raising_and_exiting_callbacks_are_logged_by_name_and_delivery_goes_on(caplog):
    pipeline = Pipeline(fast_config())

    def raises(event):
        raise RuntimeError("boom")

    def exits(event):
        sys.exit(3)

    def interrupts(event):
        raise KeyboardInterrupt

    for callback in (raises, exits, interrupts):
        pipeline.on("appeared", callback)
        pipeline.on("disappeared", callback)
    seen = Recorder(pipeline)  # registered after the misbehaving ones: must still get every event
    with caplog.at_level(logging.ERROR):
        pipeline.run()
    pipeline.close()
    assert_paired(seen.events)
    events = len(seen.events)
    assert pipeline.stats().callback_errors == 3 * events and pipeline.stats().events_dropped == 0
    for name, error in (("raises", "RuntimeError"), ("exits", "SystemExit"), ("interrupts", "KeyboardInterrupt")):
        assert f"_by_name_and_delivery_goes_on.<locals>.{name} raised {error}" in caplog.text


def test_a_slow_callback_makes_shutdown_slower_not_lossy(tmp_path):
    pipeline = Pipeline(fast_config(**{"events.shutdown_timeout": 0.1}))
    jsonl = JsonlWriter(tmp_path / "run.jsonl")
    pipeline.add_sink(jsonl)
    seen = Recorder(pipeline)
    finished = []
    pipeline.on("disappeared", lambda event: (time.sleep(1.0), finished.append(event.track_id)))
    started = time.monotonic()
    pipeline.run()
    pipeline.close()
    assert_paired(seen.events)
    disappeared = sum(kind == "disappeared" for kind, _ in seen.events)
    assert len(finished) == disappeared  # close() returned after the last slow callback had finished
    assert time.monotonic() - started >= disappeared * 1.0  # each slow callback ran to its end
    assert pipeline.stats().events_dropped == 0
    sink_events = [(r["event"], r["track_id"]) for r in read_jsonl(tmp_path / "run.jsonl") if r["type"] == "event"]
    assert Counter(k for k, _ in sink_events if k != "attribute_changed") == \
        Counter(k for k, _ in seen.events if k != "attribute_changed")


def test_stop_from_inside_a_callback_neither_blocks_nor_raises():
    pipeline = Pipeline(fast_config())
    seen = Recorder(pipeline)
    took = []

    def stop_at_first_appeared(event):
        started = time.monotonic()
        pipeline.stop()
        took.append(time.monotonic() - started)

    pipeline.on("appeared", stop_at_first_appeared)
    started = time.monotonic()
    pipeline.run()  # raises nothing ("cannot join current thread" before)
    pipeline.close()
    assert took and max(took) < 0.2
    assert time.monotonic() - started < 30.0
    assert pipeline.frames_processed < 41  # it did stop early
    assert_paired(seen.events)


class SlowSink:
    """A real sink that takes `delay` seconds per frame (a congested network transport)."""

    def __init__(self, delay: float):
        self.delay = delay
        self.frames = 0
        self.events: list[tuple[str, int]] = []
        self.stats = None
        self.closed = False

    def write_event(self, event) -> None:
        self.events.append((event.kind.value, event.track_id))

    def write_frame(self, result) -> None:
        time.sleep(self.delay)
        self.frames += 1

    def write_stats(self, stats) -> None:
        self.stats = stats

    def close(self) -> None:
        self.closed = True


def test_fast_mode_sinks_apply_back_pressure_and_lose_nothing():
    sink = SlowSink(0.02)
    pipeline = Pipeline(fast_config(), sinks=[sink])
    pipeline.sinks.queue_size = 2  # a congested sink: perception must wait for it
    pipeline.run()
    pipeline.close()
    stats = pipeline.stats()
    assert sink.closed and sink.stats["frames_processed"] == stats.frames_processed == 41
    assert sink.frames == 41 and stats.sink_frames_dropped == 0
    assert_paired(sink.events)


def test_real_time_sinks_that_cannot_keep_up_drop_frames_counted_never_lifecycle_events():
    sink = SlowSink(0.3)  # the clip plays at 12 fps: 0.08 s a frame
    config = load_config(None, [f"source.uri={CLIP}", "source.mode=realtime", "overlay.show=false"])
    pipeline = Pipeline(config, sinks=[sink])
    pipeline.sinks.queue_size = 2
    pipeline.run()
    pipeline.close()
    stats = pipeline.stats()
    assert stats.sink_frames_dropped > 0 and sink.frames + stats.sink_frames_dropped == stats.frames_processed
    assert sink.stats["sink_frames_dropped"] == stats.sink_frames_dropped
    assert_paired(sink.events)
    assert "sinks: " in stats.format()


class BrokenSink(SlowSink):
    """A sink whose transport fails on every frame (a peer that went away)."""

    def write_frame(self, result) -> None:
        raise ConnectionError("peer went away")


def test_a_failing_sink_is_counted_and_the_other_sinks_get_everything(tmp_path, caplog):
    broken, jsonl = BrokenSink(0.0), JsonlWriter(tmp_path / "run.jsonl")
    jsonl.write_run(CLIP, None)
    pipeline = Pipeline(fast_config(), sinks=[broken, jsonl])
    with caplog.at_level(logging.ERROR):
        pipeline.run()
    stats = assert_files_complete(tmp_path / "run.jsonl", None)
    assert stats["sink_errors"] == stats["frames_processed"] == 41 and broken.closed
    assert caplog.text.count("write_frame failed") == 1  # the first failure in full, the rest counted
