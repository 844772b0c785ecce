"""Frame capture on its own thread, from a webcam, a video file, a network stream or a GStreamer pipeline.

Two modes (design.md, "Threads and queues"):
- "realtime": a one-slot mailbox; a newer frame replaces an unread one and each replaced frame counts as
  dropped, so latency stays bounded. Files are paced at their frame rate (`pace_files`) to behave like a camera.
- "fast": lossless; the capture thread waits until its frame is taken; files are read as fast as consumed.

Each frame carries two clocks: `timestamp`, the monotonic time it was captured (latency is measured
from it), and `media_time`, the stream's own clock — a file's frame position divided by its frame rate
(continuing across loops), a live source's capture time — so that a file scored in fast mode gives the
same tracks on a fast and a slow machine.

End of file ends the run cleanly (`finished`). A live source (camera, stream, pipeline, or a file opened
with `live=True`, which loops it like a camera) that fails is reopened with exponential backoff.
OpenCV's VideoCapture does the decoding; this module only adds the thread, the mailbox and the reopening.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from runtime.types import Frame

log = logging.getLogger(__name__)

MODES = ("realtime", "fast")


class SourceError(RuntimeError):
    """A capture source that cannot be opened or read; the message names the source."""


@dataclass
class CaptureStats:
    frames_read: int = 0
    frames_dropped: int = 0
    reopens: int = 0


def source_kind(source: str | int) -> str:
    """"webcam", "stream", "gstreamer" or "file" (see the module docstring)."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return "webcam"
    if " ! " in source:
        return "gstreamer"
    if source.lower().startswith(("rtsp://", "rtsps://", "http://", "https://")):
        return "stream"
    return "file"


def open_video(source: str | int) -> cv2.VideoCapture:
    """Open `source` with OpenCV; raises SourceError naming it and what failed."""
    kind = source_kind(source)
    if kind == "file" and not Path(source).is_file():
        raise SourceError(f"video file {source!r} does not exist")
    if kind == "gstreamer" and not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()):
        raise SourceError(f"GStreamer pipeline {source!r}: this OpenCV build has no GStreamer support")
    if kind == "webcam":
        video = cv2.VideoCapture(int(source))
    elif kind == "gstreamer":
        video = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    else:
        video = cv2.VideoCapture(str(source))
    if not video.isOpened():
        video.release()
        raise SourceError(f"cannot open {kind} source {source!r}")
    return video


class Capture:
    """Reads frames from one source on one thread; `read` hands out the next (realtime: newest) frame."""

    def __init__(
        self,
        source: str | int,
        mode: str = "realtime",
        name: str | None = None,
        reopen_initial_delay: float = 0.5,
        reopen_max_delay: float = 8.0,
        reopen_attempts: int | None = None,
        pace_files: bool = True,
        live: bool | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"capture mode must be one of {MODES}, got {mode!r}")
        self.source = source
        self.mode = mode
        self.name = name or str(source)
        self.kind = source_kind(source)
        self.live = self.kind != "file" if live is None else live
        self.reopen_initial_delay = reopen_initial_delay
        self.reopen_max_delay = reopen_max_delay
        self.reopen_attempts = reopen_attempts
        self.pace = pace_files and mode == "realtime" and self.kind == "file"
        self._stats = CaptureStats()
        self._slot: Frame | None = None
        self._ended = False
        self._error: SourceError | None = None
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._video: cv2.VideoCapture | None = None
        self._next_index = 0
        self._loop_offset = 0.0  # a looped file's media time at the start of the current pass

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"capture {self.name!r} already started")
        self._video = open_video(self.source)
        self._thread = threading.Thread(target=self._run, name=f"capture:{self.name}", daemon=True)
        self._thread.start()

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None when none arrived within `timeout` or the source has finished."""
        with self._changed:
            self._changed.wait_for(lambda: self._slot is not None or self._ended, timeout)
            frame, self._slot = self._slot, None
            self._changed.notify_all()
        return frame

    @property
    def finished(self) -> bool:
        """The source ended (end of file, gave up reopening, or stopped) and no frame is pending."""
        with self._changed:
            return self._ended and self._slot is None

    @property
    def error(self) -> SourceError | None:
        """Why a live source ended, when it gave up reopening; None after a clean end."""
        return self._error

    def stats(self) -> CaptureStats:
        with self._changed:
            return CaptureStats(**vars(self._stats))

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.warning("capture %s: reader thread did not stop within 5 s (blocked in the source)", self.name)

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- capture thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._read_until_failure()
                if self._stopping.is_set() or not self.live:
                    break
                if not self._reopen():
                    break
        except Exception as error:  # never die silently: the consumer sees `finished` and `error`
            log.exception("capture %s failed", self.name)
            self._error = SourceError(f"capture {self.name!r} failed: {error}")
        finally:
            if self._video is not None:
                self._video.release()
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _read_until_failure(self) -> None:
        """Read frames until the source fails or ends (or stop); hand each to the consumer."""
        fps = self._video.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and fps > 0 else 0.0
        period = 1.0 / fps if self.pace and fps else 0.0
        next_due = time.monotonic()
        position, media_time = 0, self._loop_offset
        while not self._stopping.is_set():
            ok, image = self._video.read()
            if not ok or image is None:
                break
            if period:
                next_due += period
                self._stopping.wait(max(0.0, next_due - time.monotonic()))
            captured = time.monotonic()
            media_time = self._media_time(position, fps, captured)
            self._deliver(Frame(image=image, index=self._next_index, timestamp=captured, source=self.name,
                                media_time=media_time))
            self._next_index += 1
            position += 1
        # a looped file's next pass continues the clock one frame after this pass's last frame
        self._loop_offset = media_time + (1.0 / fps if fps else 1e-3)

    def _media_time(self, position: int, fps: float, captured: float) -> float:
        """The stream's clock for the frame at `position` in this pass (see the module docstring)."""
        if self.kind != "file":
            return captured
        if fps:
            return self._loop_offset + position / fps
        return self._loop_offset + self._video.get(cv2.CAP_PROP_POS_MSEC) / 1000.0  # no frame rate: the file's own

    def _deliver(self, frame: Frame) -> None:
        with self._changed:
            if self.mode == "fast":
                self._changed.wait_for(lambda: self._slot is None or self._stopping.is_set())
            elif self._slot is not None:
                self._stats.frames_dropped += 1
            self._slot = frame
            self._stats.frames_read += 1
            self._changed.notify_all()

    def _reopen(self) -> bool:
        """Reopen the live source with exponential backoff; False when giving up or stopping."""
        self._video.release()
        self._video = None
        delay, attempt, last_error = self.reopen_initial_delay, 0, None
        while self.reopen_attempts is None or attempt < self.reopen_attempts:
            attempt += 1
            log.warning("capture %s: source failed, reopening in %.2f s (attempt %d)", self.name, delay, attempt)
            if self._stopping.wait(delay):
                return False
            try:
                self._video = open_video(self.source)
            except SourceError as error:
                last_error = error
                delay = min(delay * 2.0, self.reopen_max_delay)
                continue
            with self._changed:
                self._stats.reopens += 1
            return True
        self._error = SourceError(f"gave up reopening {self.kind} source {self.name!r} after {attempt} attempts: {last_error}")
        log.error("%s", self._error)
        return False
