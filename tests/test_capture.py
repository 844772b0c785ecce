"""Capture on real video files with real OpenCV decoding and a real reader thread."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.capture import Capture, SourceError, source_kind

CLIP = Path(__file__).resolve().parent.parent / "samples" / "classroom.mp4"


def clip_frame_count(path: Path) -> int:
    video = cv2.VideoCapture(str(path))
    count = 0
    while video.read()[0]:
        count += 1
    video.release()
    return count


def read_all(capture: Capture, timeout: float = 5.0) -> list:
    frames = []
    while not capture.finished:
        frame = capture.read(timeout=timeout)
        if frame is not None:
            frames.append(frame)
    return frames


def test_source_kinds():
    assert source_kind(0) == "webcam"
    assert source_kind("1") == "webcam"
    assert source_kind("rtsp://robot.local/stream") == "stream"
    assert source_kind("https://example.org/cam.mjpg") == "stream"
    assert source_kind("nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! appsink") == "gstreamer"
    assert source_kind("clip.mp4") == "file"


def test_fast_mode_delivers_every_frame_in_order_then_finishes():
    expected = clip_frame_count(CLIP)
    with Capture(str(CLIP), mode="fast") as capture:
        frames = read_all(capture)
        stats = capture.stats()
    assert [f.index for f in frames] == list(range(expected))
    assert all(f.image.shape == (270, 480, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(b.timestamp >= a.timestamp for a, b in zip(frames, frames[1:]))
    assert frames[0].source == str(CLIP)
    assert (stats.frames_read, stats.frames_dropped, stats.reopens) == (expected, 0, 0)
    assert capture.read(timeout=0.01) is None and capture.finished and capture.error is None


def test_realtime_mode_drops_frames_for_a_slow_consumer():
    expected = clip_frame_count(CLIP)
    with Capture(str(CLIP), mode="realtime", pace_files=False) as capture:
        frames = []
        while not capture.finished:
            frame = capture.read(timeout=5.0)
            if frame is not None:
                frames.append(frame)
                time.sleep(0.03)  # a consumer slower than the decoder
        stats = capture.stats()
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))
    assert stats.frames_read == expected
    assert stats.frames_dropped > 0
    assert len(frames) + stats.frames_dropped == expected
    fps = cv2.VideoCapture(str(CLIP)).get(cv2.CAP_PROP_FPS)
    # the stream's clock follows each kept frame's position in the file, not when it was read
    assert [f.media_time for f in frames] == pytest.approx([f.index / fps for f in frames])


def test_realtime_mode_paces_a_file_at_its_frame_rate():
    fps = cv2.VideoCapture(str(CLIP)).get(cv2.CAP_PROP_FPS)
    with Capture(str(CLIP), mode="realtime") as capture:
        frames = [capture.read(timeout=2.0) for _ in range(6)]
    gaps = np.diff([f.timestamp for f in frames])
    assert np.median(gaps) == pytest.approx(1.0 / fps, rel=0.3)


def test_unopenable_sources_raise_source_error_naming_them(tmp_path):
    missing = tmp_path / "no_such_clip.mp4"
    with pytest.raises(SourceError, match="no_such_clip.mp4"):
        Capture(str(missing)).start()
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("this is not a video")
    with pytest.raises(SourceError, match="notes.mp4"):
        Capture(str(not_a_video)).start()


def test_live_source_that_fails_is_reopened_and_indices_continue(tmp_path):
    """A file opened as a live source: its end is a failure; while it is missing, reopening backs off."""
    live_file = tmp_path / "camera.mp4"
    shutil.copy(CLIP, live_file)
    per_pass = clip_frame_count(CLIP)
    capture = Capture(str(live_file), mode="fast", live=True, reopen_initial_delay=0.02, reopen_max_delay=0.1)
    capture.start()
    try:
        first = [capture.read(timeout=5.0)]
        live_file.rename(tmp_path / "away.mp4")  # the "camera" is unplugged: the open handle reads on, reopening fails
        first += [capture.read(timeout=5.0) for _ in range(per_pass - 1)]
        assert capture.read(timeout=0.3) is None
        assert not capture.finished
        (tmp_path / "away.mp4").rename(live_file)  # plugged back in
        second = [capture.read(timeout=5.0) for _ in range(5)]
        stats = capture.stats()
    finally:
        capture.stop()
    indices = [f.index for f in first + second]
    assert indices == list(range(per_pass + 5))
    assert stats.reopens == 1
    # the file's clock goes on across the reopen, one frame period after the end of the first pass
    fps = cv2.VideoCapture(str(CLIP)).get(cv2.CAP_PROP_FPS)
    assert [f.media_time for f in first + second] == pytest.approx([i / fps for i in indices])


def test_live_source_gives_up_after_reopen_attempts(tmp_path):
    live_file = tmp_path / "camera.mp4"
    shutil.copy(CLIP, live_file)
    capture = Capture(str(live_file), mode="realtime", pace_files=False, live=True,
                      reopen_initial_delay=0.01, reopen_attempts=2)
    capture.start()
    live_file.unlink()  # the open handle keeps decoding; every reopen afterwards fails
    frames = read_all(capture)
    capture.stop()
    assert frames and capture.finished
    assert capture.error is not None and "camera.mp4" in str(capture.error) and "2 attempts" in str(capture.error)


def test_stop_is_idempotent_and_joins_a_blocked_reader():
    capture = Capture(str(CLIP), mode="fast")
    capture.start()
    assert capture.read(timeout=5.0) is not None  # the reader is now blocked handing over the next frame
    capture.stop()
    capture.stop()
    assert not capture._thread.is_alive()
    capture.read(timeout=0.01)  # at most one frame was pending
    assert capture.finished
