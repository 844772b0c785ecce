"""Frame capture on its own thread, from a webcam, a video file, a network stream or a GStreamer pipeline.

Two modes (design.md, "Threads and queues"):
- "realtime": a one-slot mailbox; a newer frame replaces an unread one and each replaced frame counts as
  dropped, so latency stays bounded. Files are paced at their frame rate (`pace_files`) to behave like a camera.
- "fast": lossless; the capture thread waits until its frame is taken; files are read as fast as consumed.

Each frame carries two clocks: `timestamp`, the monotonic time it was captured (latency is measured
from it), and `media_time`, the stream's own clock — a file's frame position divided by its frame rate
(continuing across loops), a live source's capture time — so that a file scored in fast mode gives the
same tracks on a fast and a slow machine.

Two threads: a supervisor (`capture:NAME`) opens the source and watches one reader thread per opened
source (`capture-read:NAME`), which owns that VideoCapture, reads it and releases it when it ends.
- A file ends at its real end: a failed read while frames remain (CAP_PROP_FRAME_COUNT) is an undecodable
  frame, skipped and counted (`frames_undecodable`, one warning with the count); reading stops after
  `MAX_FAILED_READS` failures in a row whatever the count says. A looping file (`live=True`) starts its
  next pass at once: the end of a pass is not a failure.
- A live source (camera, stream, pipeline) that fails is reopened with exponential backoff. One whose read
  has not returned for `read_timeout` seconds is stalled (logged once): its reader is abandoned (it releases
  its VideoCapture when the native read returns) and the source is reopened the same way. Network streams
  also get FFmpeg's own open and read timeouts (CAP_PROP_OPEN_TIMEOUT_MSEC, CAP_PROP_READ_TIMEOUT_MSEC: a
  second longer, so that an abandoned read ends soon after).
- `stop()` returns within about half a second even while a native read or open is blocked: the threads
  are daemons, joined with a bound and otherwise left to end on their own.
OpenCV's VideoCapture does the decoding; this module only adds the threads, the mailbox and the reopening.
"""
from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from runtime.quiet import native_stderr_silenced
from runtime.types import Frame

log = logging.getLogger(__name__)

MODES = ("realtime", "fast")
MAX_FAILED_READS = 50  # failed reads in a row that end a file even if its frame count says more remain
STOP_JOIN_SECONDS = 0.5  # how long stop() waits for the supervisor thread


class SourceError(RuntimeError):
    """A capture source that cannot be opened or read; the message names the source."""


@dataclass
class CaptureStats:
    frames_read: int = 0
    frames_dropped: int = 0
    reopens: int = 0
    frames_undecodable: int = 0  # failed reads of a file skipped before its end
    stalls: int = 0  # a live source's read did not return within read_timeout


def source_kind(source: str | int) -> str:
    """"webcam", "stream", "gstreamer" or "file" (see the module docstring)."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return "webcam"
    if " ! " in source:
        return "gstreamer"
    if source.lower().startswith(("rtsp://", "rtsps://", "http://", "https://")):
        return "stream"
    return "file"


def _has_backend(name: str) -> bool:
    return bool(re.search(rf"{name}:\s+YES", cv2.getBuildInformation()))


def open_video(source: str | int, timeout: float | None = None) -> cv2.VideoCapture:
    """Open `source` with OpenCV; raises SourceError naming it and what failed. `timeout` (seconds): FFmpeg's
    open timeout for a network stream; its read timeout is a second longer, a backstop that ends a read the
    capture's own watchdog (the same for every backend) has already abandoned."""
    kind = source_kind(source)
    if kind == "file" and not Path(source).is_file():
        raise SourceError(f"video file {source!r} does not exist")
    if kind == "gstreamer" and not _has_backend("GStreamer"):
        raise SourceError(f"GStreamer pipeline {source!r}: this OpenCV build has no GStreamer support")
    if kind == "webcam":
        video = cv2.VideoCapture(int(source))
    elif kind == "gstreamer":
        video = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    elif kind == "stream" and timeout and _has_backend("FFMPEG"):
        milliseconds = max(1, int(timeout * 1000))
        video = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds,
                                                              cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds + 1000])
    else:
        video = cv2.VideoCapture(str(source))
    if not video.isOpened():
        video.release()
        raise SourceError(f"cannot open {kind} source {source!r}")
    return video


@dataclass
class _Pass:
    """One opened source and its reader thread, as the supervisor sees them."""

    video: cv2.VideoCapture
    abandoned: threading.Event = field(default_factory=threading.Event)  # the supervisor gave up on it
    done: threading.Event = field(default_factory=threading.Event)
    reading_since: float | None = None  # monotonic start of the native read in progress
    outcome: str = "failed"  # "end" (a file's real end), "failed", "stalled"


class Capture:
    """Reads frames from one source on its own threads; `read` hands out the next (realtime: newest) frame."""

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
        read_timeout: float = 5.0,
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
        self.read_timeout = read_timeout
        self.pace = pace_files and mode == "realtime" and self.kind == "file"
        self._stats = CaptureStats()
        self._slot: Frame | None = None
        self._ended = False
        self._error: SourceError | None = None
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._video: cv2.VideoCapture | None = None  # opened by start(), then owned by its reader
        self._next_index = 0
        self._loop_offset = 0.0  # a looped file's media time at the start of the current pass
        self._warned_undecodable = False

    @property
    def clock_is_monotonic(self) -> bool:
        """The stream's clock is the monotonic clock (a live device or stream, not a file's media clock)."""
        return self.kind != "file"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"capture {self.name!r} already started")
        # OpenCV's and FFmpeg's own lines for a webcam or file they cannot open (a dozen for a missing webcam)
        # come before our one-line SourceError. Only this first open of these two kinds is silenced, as it takes
        # milliseconds: fd 2 is the whole process's, and the classifier's thread may be logging meanwhile.
        # Streams and GStreamer pipelines can block for seconds, and their lines are the diagnosis; reopens
        # happen while the run logs (runtime/quiet.py).
        quiet = native_stderr_silenced() if self.kind in ("webcam", "file") else contextlib.nullcontext()
        with quiet:
            self._video = self._open()
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
        """Stop reading; returns within STOP_JOIN_SECONDS even while a native read is blocked. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_JOIN_SECONDS)
            if self._thread.is_alive():
                log.warning("capture %s: the source is blocked in OpenCV; left to its daemon thread", self.name)
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- supervisor thread ----------------------------------------------------------------------

    def _open(self) -> cv2.VideoCapture:
        return open_video(self.source, self.read_timeout if self.live else None)

    def _run(self) -> None:
        video, self._video = self._video, None
        try:
            while video is not None and not self._stopping.is_set():
                outcome = self._watch(video)
                video = None
                if self._stopping.is_set() or (outcome == "end" and not self.live):
                    break
                if outcome == "stalled":
                    with self._changed:
                        self._stats.stalls += 1
                    log.warning("capture %s: no frame for %.1f s (source.read_timeout): the source stalled, "
                                "reopening it", self.name, self.read_timeout)
                if outcome == "end":  # the next pass of a looping file: at once, no warning
                    try:
                        video = self._open()
                        continue
                    except SourceError:
                        pass  # the file went away: reopen it like a failed camera
                video = self._reopen()
        except Exception as error:  # never die silently: the consumer sees `finished` and `error`
            log.exception("capture %s failed", self.name)
            self._error = SourceError(f"capture {self.name!r} failed: {error}")
        finally:
            if video is not None:
                video.release()
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _watch(self, video: cv2.VideoCapture) -> str:
        """Read `video` on a reader thread until it ends, fails, stalls or stop(); returns the outcome."""
        current = _Pass(video)
        threading.Thread(target=self._read_pass, args=(current,), name=f"capture-read:{self.name}",
                         daemon=True).start()
        while not current.done.wait(0.05):
            since = current.reading_since
            stalled = self.live and since is not None and time.monotonic() - since > self.read_timeout
            if self._stopping.is_set() or stalled:
                current.abandoned.set()  # its reader releases the VideoCapture when the read returns
                with self._changed:
                    self._changed.notify_all()
                return "stopped" if self._stopping.is_set() else "stalled"
        return current.outcome

    def _reopen(self) -> cv2.VideoCapture | None:
        """Reopen the live source with exponential backoff; None when giving up or stopping."""
        delay, attempt, last_error = self.reopen_initial_delay, 0, None
        while self.reopen_attempts is None or attempt < self.reopen_attempts:
            attempt += 1
            log.warning("capture %s: source failed, reopening in %.2f s (attempt %d)", self.name, delay, attempt)
            if self._stopping.wait(delay):
                return None
            try:
                video = self._open()
            except SourceError as error:
                last_error = error
                delay = min(delay * 2.0, self.reopen_max_delay)
                continue
            if self._stopping.is_set():  # stop() came while the open was blocked
                video.release()
                return None
            with self._changed:
                self._stats.reopens += 1
            return video
        self._error = SourceError(f"gave up reopening {self.kind} source {self.name!r} after {attempt} attempts: {last_error}")
        log.error("%s", self._error)
        return None

    # --- reader thread --------------------------------------------------------------------------

    def _read_pass(self, current: _Pass) -> None:
        try:
            self._read_frames(current)
        except Exception:  # a reader that dies is a failed source (reopened if live)
            log.exception("capture %s: reading failed", self.name)
            current.outcome = "failed"
        finally:
            current.video.release()
            current.done.set()

    def _read_frames(self, current: _Pass) -> None:
        """Read frames until the source fails or ends (or is abandoned); hand each to the consumer."""
        video = current.video
        fps = video.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and fps > 0 else 0.0
        frame_count = int(video.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self.kind == "file" else 0
        period = 1.0 / fps if self.pace and fps else 0.0
        next_due = time.monotonic()
        position, media_time = 0, self._loop_offset  # position: frames of this pass, decoded or not
        decoded, failed_in_a_row, skipped = 0, 0, 0
        while not (self._stopping.is_set() or current.abandoned.is_set()):
            current.reading_since = time.monotonic()
            ok, image = video.read()
            read_seconds = time.monotonic() - current.reading_since
            current.reading_since = None
            if not ok or image is None:
                if self.kind != "file":
                    current.outcome = "stalled" if read_seconds >= 0.9 * self.read_timeout else "failed"
                    return
                failed_in_a_row += 1
                if failed_in_a_row >= MAX_FAILED_READS or 0 < frame_count <= position + failed_in_a_row:
                    break  # the real end of the file
                continue
            skipped += failed_in_a_row
            position += failed_in_a_row
            failed_in_a_row = 0
            if period:
                next_due += period
                self._stopping.wait(max(0.0, next_due - time.monotonic()))
            captured = time.monotonic()
            media_time = self._media_time(video, position, fps, captured)
            if not self._deliver(current, image, captured, media_time):
                return
            decoded += 1
            position += 1
        if current.abandoned.is_set():
            return
        current.outcome = "end"
        self._count_undecodable(max(skipped, frame_count - decoded))
        # a looped file's next pass continues the clock one frame after this pass's last frame
        self._loop_offset = media_time + (1.0 / fps if fps else 1e-3)

    def _count_undecodable(self, frames: int) -> None:
        if frames <= 0:
            return
        with self._changed:
            self._stats.frames_undecodable += frames
        if not self._warned_undecodable:
            self._warned_undecodable = True
            log.warning("capture %s: %d undecodable frame(s) skipped (damaged or truncated file)", self.name, frames)

    def _media_time(self, video: cv2.VideoCapture, position: int, fps: float, captured: float) -> float:
        """The stream's clock for the frame at `position` in this pass (see the module docstring)."""
        if self.kind != "file":
            return captured
        if fps:
            return self._loop_offset + position / fps
        return self._loop_offset + video.get(cv2.CAP_PROP_POS_MSEC) / 1000.0  # no frame rate: the file's own

    def _deliver(self, current: _Pass, image, captured: float, media_time: float) -> bool:
        """Hand one frame to the consumer; False when stopping or abandoned (the frame is not delivered)."""
        with self._changed:
            gone = lambda: self._stopping.is_set() or current.abandoned.is_set()  # noqa: E731
            if self.mode == "fast":
                self._changed.wait_for(lambda: self._slot is None or gone())
            if gone():
                return False
            if self._slot is not None:
                self._stats.frames_dropped += 1
            self._slot = Frame(image=image, index=self._next_index, timestamp=captured, source=self.name,
                               media_time=media_time)
            self._next_index += 1
            self._stats.frames_read += 1
            self._changed.notify_all()
        return True
