"""The overlay: boxes, track ids, labels with confidences, age estimate, FPS and latency.

`draw` paints one FrameResult on a copy of its frame; `Window` shows it (cv2.imshow) and
`VideoRecorder` writes it to a file when the user asks for one (--record). Nothing is written otherwise.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.jsonl import RANDOM_WEIGHTS_WARNING
from runtime.types import FrameResult, TrackState

log = logging.getLogger(__name__)

COLORS = {  # BGR
    TrackState.TENTATIVE: (160, 160, 160),
    TrackState.CONFIRMED: (60, 200, 60),
    TrackState.LOST: (0, 140, 255),
}
TEXT = (255, 255, 255)
WARNING = (0, 0, 255)


@dataclass(frozen=True)
class Status:
    """The line at the top of the overlay."""

    fps: float
    latency_ms: float | None  # capture → this frame drawn
    model: str  # e.g. "pe-core-t16-384/dora fp32", or "no model"
    random_weights: bool


def track_lines(result_track) -> list[str]:
    """`#3`, then one line per task (`Happy 0.72`), then the age estimate."""
    track, attributes = result_track.track, result_track.attributes
    lines = [f"#{track.id}"]
    for name, task in attributes.tasks.items():
        if task.label is not None:
            marker = "" if task.stable else "?"
            lines.append(f"{task.label}{marker} {task.confidence:.2f}")
    if attributes.age_years is not None:
        lines.append(f"~{attributes.age_years:.0f} y")
    return lines


def draw(result: FrameResult, status: Status, font_scale: float = 0.5) -> np.ndarray:
    image = result.frame.image.copy()
    for item in result.tracks:
        x1, y1, x2, y2 = (int(round(v)) for v in item.track.box)
        color = COLORS[item.track.state]
        cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)
        _text_block(image, track_lines(item), (x1, y2 + 4), color, font_scale)
    latency = "-" if status.latency_ms is None else f"{status.latency_ms:.0f} ms"
    header = f"{status.fps:.1f} fps  latency {latency}  model: {status.model}"
    _text_block(image, [header], (4, 4), (40, 40, 40), font_scale)
    if status.random_weights:
        _text_block(image, [RANDOM_WEIGHTS_WARNING], (4, 28), WARNING, font_scale)
    return image


def _text_block(image: np.ndarray, lines: list[str], origin: tuple[int, int], background: tuple, scale: float) -> None:
    x, y = origin
    for line in lines:
        (width, height), baseline = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(image, (x, y), (x + width + 4, y + height + baseline + 4), background, -1)
        cv2.putText(image, line, (x + 2, y + height + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT, 1, cv2.LINE_AA)
        y += height + baseline + 4


class FpsMeter:
    """Frames per second over the last `window` frames."""

    def __init__(self, window: int = 30):
        self.times: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        self.times.append(time.monotonic())
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(1e-9, self.times[-1] - self.times[0])


class Window:
    """An OpenCV window; `show` returns False when the user closes it or presses q / Esc."""

    def __init__(self, name: str):
        self.name = name
        cv2.namedWindow(name, cv2.WINDOW_NORMAL)

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(self.name, image)
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE) < 1
        return not (closed or key in (ord("q"), 27))

    def close(self) -> None:
        cv2.destroyWindow(self.name)


class VideoRecorder:
    """Writes overlay frames to a video file; under a temporary name until closed (then renamed).

    The file is probed when the recorder is made (a tiny writer opened and removed), so a missing folder or
    a container OpenCV cannot write is reported before the run starts, not after the first frame.

    Frame rate: `fps`, or None for the rate of the frames themselves, measured on their stream clock
    (`write(image, stream_time)`) over the first `MEASURE_FRAMES`: a file's frame positions give its own FPS
    exactly, a live source's capture times its measured rate, so playback lasts as long as the source did.
    Codec: `codec` (a FourCC), or H.264 ('avc1') where this OpenCV build can encode it, else 'mp4v' for
    .mp4/.mov and 'MJPG' for .avi (the pip opencv wheels have no H.264 encoder).
    """

    MEASURE_FRAMES = 12
    FALLBACK_FPS = 30.0

    def __init__(self, path: str | Path, fps: float | None = None, codec: str | None = None):
        self.path = Path(path)
        self.temporary = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._pending: list[tuple[np.ndarray, float | None]] = []  # frames held while the rate is measured
        self.frames = 0
        if not self.path.parent.is_dir():
            raise OSError(f"--record {self.path}: folder {self.path.parent} does not exist")
        mp4 = self.path.suffix.lower() in (".mp4", ".m4v", ".mov")
        candidates = [codec] if codec else (["avc1", "mp4v"] if mp4 else ["MJPG"])
        self.codec = None
        for fourcc in candidates:
            probe = self._try_open(fourcc, 30.0, (16, 16))
            if probe is not None:
                probe.release()
                self.codec = fourcc
                break
        self.temporary.unlink(missing_ok=True)
        if self.codec is None:
            raise OSError(f"--record {self.path}: OpenCV cannot write this video file"
                          f"{f' with codec {codec!r}' if codec else ''} (try .mp4 or .avi)")

    def _try_open(self, fourcc: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter | None:
        from runtime.quiet import native_stderr_silenced
        with native_stderr_silenced():  # FFmpeg's lines for a missing encoder; the fallback is ours to log
            writer = cv2.VideoWriter(str(self.temporary), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer
        writer.release()
        self.temporary.unlink(missing_ok=True)
        return None

    def _measured_fps(self) -> float:
        times = [t for _, t in self._pending if t is not None]
        if len(times) >= 2 and times[-1] > times[0]:
            return round((len(times) - 1) / (times[-1] - times[0]), 3)
        return self.FALLBACK_FPS

    def _start(self) -> None:
        fps = self.fps if self.fps else self._measured_fps()
        height, width = self._pending[0][0].shape[:2]
        self._writer = self._try_open(self.codec, fps, (width, height))
        if self._writer is None:
            raise OSError(f"--record {self.path}: OpenCV cannot open the video writer ({self.codec}, {width}x{height})")
        self.fps = fps
        log.info("recording %s at %.3g fps (%s)", self.path, fps, self.codec)
        for image, _ in self._pending:
            self._writer.write(image)
        self._pending.clear()

    def write(self, image: np.ndarray, stream_time: float | None = None) -> None:
        """Add one frame; `stream_time` (the Frame's stream_time) measures the rate when `fps` is None."""
        self.frames += 1
        if self._writer is None:
            self._pending.append((image, stream_time))
            if self.fps or len(self._pending) >= self.MEASURE_FRAMES:
                self._start()
            return
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is None and self._pending:
            self._start()
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        os.replace(self.temporary, self.path)
        log.info("recorded %d frames to %s", self.frames, self.path)
