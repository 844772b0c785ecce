"""The overlay: boxes, track ids, labels with confidences, age estimate, FPS and latency.

`draw` paints one FrameResult on a copy of its frame; `Window` shows it (cv2.imshow) and
`VideoRecorder` writes it to a file when the user asks for one (--record). Nothing is written otherwise.

What is drawn is decided first (`layout`: plain data the tests read), then painted:
- a confirmed track: its box (thinner when the box is predicted, not detected in this frame) and a label
  block with its id and its own attributes (`track_lines`; a new track has none, so it starts bare);
- a lost track: a thin dashed box and its id only (its box is a prediction and its readings are old);
- a tentative track: a thin grey box, no label (it may be a false detection or about to be merged).
Label blocks are placed greedily, in track-id order so a label keeps its side from frame to frame: below
the face, above, right, left; the first that lies in the image and overlaps neither a placed label nor
another face wins; failing that, the candidate overlapping least.
All text is ASCII (`ascii_text`): OpenCV's Hershey fonts have no other glyphs ("—" would show as "???").
A real font would need cv2.freetype (opencv-contrib) and a font file shipped with the project, for text that
is ASCII already except the banner's dash and what a model's metadata might carry.
"""
from __future__ import annotations

import logging
import os
import time
import unicodedata
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
BANNER = (40, 40, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX
GAP = 4  # pixels between a face box and its label
_REPLACE = {"\u2014": "-", "\u2013": "-", "\u2212": "-", "\u00b1": "+/-", "\u00b0": " deg", "\u00d7": "x",
            "\u2026": "...", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00b5": "u", "\u2248": "~"}

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2


@dataclass(frozen=True)
class Status:
    """The line at the top of the overlay."""

    fps: float
    latency_ms: float | None  # capture → this frame drawn
    model: str  # e.g. "pe-core-t16-384/dora fp32", or "no model"
    random_weights: bool


@dataclass(frozen=True)
class BoxShape:
    rect: Rect
    color: tuple[int, int, int]
    thickness: int
    dashed: bool


@dataclass(frozen=True)
class Label:
    lines: tuple[str, ...]  # ASCII
    rect: Rect  # the filled block behind the lines
    color: tuple[int, int, int]  # the block's background


def ascii_text(text: str) -> str:
    """`text` in characters the Hershey fonts have: known symbols spelled out, accents dropped, the rest '?'."""
    text = "".join(_REPLACE.get(c, c) for c in text)
    text = unicodedata.normalize("NFKD", text)
    return "".join(c if 32 <= ord(c) < 127 else ("" if unicodedata.combining(c) else "?") for c in text)


def track_lines(result_track) -> list[str]:
    """`#3`, then one line per task (`Happy 0.72`), then the age estimate: the track's own attributes only."""
    track, attributes = result_track.track, result_track.attributes
    lines = [f"#{track.id}"]
    for name, task in attributes.tasks.items():
        if task.label is not None:
            marker = "" if task.stable else "?"
            lines.append(f"{task.label}{marker} {task.confidence:.2f}")
    if attributes.age_years is not None:
        lines.append(f"~{attributes.age_years:.0f} y")
    return [ascii_text(line) for line in lines]


def banner_lines(status: Status) -> list[tuple[str, tuple[int, int, int]]]:
    latency = "-" if status.latency_ms is None else f"{status.latency_ms:.0f} ms"
    lines = [(f"{status.fps:.1f} fps  latency {latency}  model: {status.model}", BANNER)]
    if status.random_weights:
        lines.append((RANDOM_WEIGHTS_WARNING, WARNING))
    return [(ascii_text(text), color) for text, color in lines]


def layout(result: FrameResult, status: Status, font_scale: float = 0.5) -> tuple[list[BoxShape], list[Label]]:
    """The boxes and label blocks `draw` paints, labels placed so they cover neither each other nor faces."""
    height, width = result.frame.image.shape[:2]
    labels, taken = [], []
    y = GAP
    for text, color in banner_lines(status):
        w, h = _block_size([text], font_scale)
        labels.append(Label((text,), (GAP, y, GAP + w, y + h), color))
        taken.append(labels[-1].rect)
        y += h
    boxes = []
    faces = [_rect(item.track.box) for item in result.tracks]
    for item in sorted(result.tracks, key=lambda item: item.track.id):
        track = item.track
        face = _rect(track.box)
        state = track.state
        detected = getattr(track, "detected", track.detection is not None)
        if state is TrackState.CONFIRMED:
            boxes.append(BoxShape(face, COLORS[state], 2 if detected else 1, False))
            lines = track_lines(item)
        elif state is TrackState.LOST:
            boxes.append(BoxShape(face, COLORS[state], 1, True))
            lines = [f"#{track.id}"]
        else:  # tentative: maybe not a face at all
            boxes.append(BoxShape(face, COLORS[state], 1, False))
            continue
        size = _block_size(lines, font_scale)
        others = [f for f in faces if f != face]
        rect = place(face, size, (width, height), taken, others)
        taken.append(rect)
        labels.append(Label(tuple(lines), rect, COLORS[state]))
    return boxes, labels


def place(face: Rect, size: tuple[int, int], image_size: tuple[int, int], labels: list[Rect], faces: list[Rect]) -> Rect:
    """Below, above, right or left of `face`: the first candidate in the image that overlaps no label or face."""
    (w, h), (width, height) = size, image_size
    x1, y1, x2, y2 = face
    candidates = [(x1, y2 + GAP), (x1, y1 - GAP - h), (x2 + GAP, y1), (x1 - GAP - w, y1)]
    rects = [(x, y, x + w, y + h) for x, y in candidates]
    inside = [r for r in rects if r[0] >= 0 and r[1] >= 0 and r[2] <= width and r[3] <= height]
    if not inside:  # a face filling the image: the label goes inside the image, over the face
        x, y = min(max(x1, 0), max(width - w, 0)), min(max(y2 + GAP, 0), max(height - h, 0))
        return (x, y, x + w, y + h)
    for rect in inside:
        if not any(_overlap(rect, other) for other in labels + faces):
            return rect
    return min(inside, key=lambda r: (sum(_overlap(r, o) for o in labels), sum(_overlap(r, o) for o in faces)))


def draw(result: FrameResult, status: Status, font_scale: float = 0.5) -> np.ndarray:
    image = result.frame.image.copy()
    boxes, labels = layout(result, status, font_scale)
    for box in boxes:
        (_dashed_rectangle if box.dashed else _rectangle)(image, box.rect, box.color, box.thickness)
    for label in labels:
        _text_block(image, label, font_scale)
    return image


def _rect(box) -> Rect:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return (x1, y1, x2, y2)


def _overlap(a: Rect, b: Rect) -> int:
    """Intersection area of two rectangles (0 when they only touch)."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _line_size(line: str, scale: float) -> tuple[int, int]:
    (width, height), baseline = cv2.getTextSize(line, FONT, scale, 1)
    return width + 4, height + baseline + 4


def _block_size(lines: list[str], scale: float) -> tuple[int, int]:
    sizes = [_line_size(line, scale) for line in lines]
    return max(w for w, _ in sizes), sum(h for _, h in sizes)


def _rectangle(image: np.ndarray, rect: Rect, color: tuple, thickness: int) -> None:
    cv2.rectangle(image, rect[:2], rect[2:], color, thickness)


def _dashed_rectangle(image: np.ndarray, rect: Rect, color: tuple, thickness: int, dash: int = 6) -> None:
    x1, y1, x2, y2 = rect
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            p = (ax + (bx - ax) * start // max(length, 1), ay + (by - ay) * start // max(length, 1))
            q = (ax + (bx - ax) * end // max(length, 1), ay + (by - ay) * end // max(length, 1))
            cv2.line(image, p, q, color, thickness)


def _text_block(image: np.ndarray, label: Label, scale: float) -> None:
    x, y, x2, y2 = label.rect
    cv2.rectangle(image, (x, y), (x2, y2), label.color, -1)
    for line in label.lines:
        (_, height), baseline = cv2.getTextSize(line, FONT, scale, 1)
        cv2.putText(image, line, (x + 2, y + height + 2), FONT, scale, TEXT, 1, cv2.LINE_AA)
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
