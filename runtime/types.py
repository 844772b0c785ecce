"""The small dataclasses that flow between runtime stages (design.md, "Runtime stages and their data").

Every object here is a value: a stage builds it, hands it on through a queue and never changes it
afterwards, so no stage can reach into another's state.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # H×W×3 uint8, BGR (OpenCV's order; perception converts to RGB once)
    index: int  # running number from the source, gaps mean dropped frames
    timestamp: float  # time.monotonic() when the frame was captured (latency is measured from it)
    source: str
    # Seconds on the stream's own clock: a file's frame position (so offline runs do not depend on the
    # machine's speed), a live source's capture time. Tracking, policy and smoothing run on it; None → timestamp.
    media_time: float | None = None

    @property
    def stream_time(self) -> float:
        return self.timestamp if self.media_time is None else self.media_time


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float
    keypoints: np.ndarray  # (6, 2) float pixels: right eye, left eye, nose tip, mouth, right ear, left ear
    appearance: np.ndarray | None = None  # runtime.appearance descriptor of the face and hair, when computed


class TrackState(str, enum.Enum):
    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"


@dataclass(frozen=True)
class Track:
    """A snapshot of one tracked face after a tracker update."""

    id: int
    box: Box
    detection: Detection | None  # None when the track was not matched in this frame
    hits: int
    misses: int
    state: TrackState
    last_classified: float | None = None  # stream time (Frame.stream_time) of the last classification request

    @property
    def detected(self) -> bool:
        """The box was detected in this frame (False: predicted from the track's motion)."""
        return self.detection is not None


@dataclass(frozen=True)
class TaskAttribute:
    """One task's smoothed reading for one track."""

    labels: tuple[str, ...]
    probs: np.ndarray  # smoothed, temperature-calibrated probabilities over `labels`
    label: str | None  # the shown label (after hysteresis); None before the first observation
    confidence: float  # smoothed probability of the shown label
    stable: bool  # the shown label has held for the hysteresis time
    observations: int


@dataclass(frozen=True)
class Attributes:
    tasks: dict[str, TaskAttribute] = field(default_factory=dict)
    age_years: float | None = None  # Σ p_i·c_i over the age groups, when the model has an age head
    observations: int = 0  # classifications that fed these attributes


class EventKind(str, enum.Enum):
    APPEARED = "appeared"
    ATTRIBUTES_READY = "attributes_ready"
    ATTRIBUTE_CHANGED = "attribute_changed"
    DISAPPEARED = "disappeared"


@dataclass(frozen=True)
class FaceEvent:
    kind: EventKind
    track_id: int
    timestamp: float  # capture timestamp (monotonic) of the frame that caused the event
    box: Box
    attributes: Attributes
    changes: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # task → (old, new) label
    media_time: float | None = None  # stream time of that frame (Frame.stream_time)
    reason: str | None = None  # `disappeared` only: "removed" (unseen for remove_after), "cut", "shutdown", ...


@dataclass(frozen=True)
class TrackResult:
    track: Track
    attributes: Attributes


@dataclass(frozen=True)
class FrameResult:
    frame: Frame
    tracks: list[TrackResult]
    latencies: dict[str, float]  # stage name → seconds spent on this frame
