"""Which tracks to classify in this frame (design.md, "Threads and queues"; "Never classify what has not changed").

A confirmed track matched in this frame, with no request in flight, is
- *due* when it was never classified or its last classification is older than `interval`;
- *early* when its last classification is older than `batch_fill × interval`: early tracks ride along
  in a round that has a due track, so the tracks' rounds fall into step and share one batched inference
  instead of drifting into one batch-1 inference each.
Among the due tracks: never-classified first, then the best quality first; a crop below the minimum
quality waits for a better one unless its track was never classified. At most `capacity` are chosen
(what the classifier can take now); the rest are deferred and counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.types import Track, TrackState

DUE, EARLY = "due", "early"


@dataclass(frozen=True, eq=False)
class Candidate:
    track: Track
    crop: np.ndarray  # uint8 S×S×3 RGB
    quality: float
    readiness: str = DUE  # DUE or EARLY

    @property
    def never_classified(self) -> bool:
        return self.track.last_classified is None


@dataclass(frozen=True)
class Selection:
    chosen: list[Candidate]
    deferred: int  # due, good enough, but the classifier was full
    waiting: int  # below the minimum quality, waiting for a better crop


def readiness(track: Track, now: float, interval: float, batch_fill: float, in_flight: set[int]) -> str | None:
    """DUE, EARLY or None (not to be classified now)."""
    if track.state != TrackState.CONFIRMED or track.detection is None or track.id in in_flight:
        return None
    if track.last_classified is None or now - track.last_classified >= interval:
        return DUE
    if now - track.last_classified >= batch_fill * interval:
        return EARLY
    return None


def select(candidates: list[Candidate], capacity: int, max_batch: int, min_quality: float) -> Selection:
    """The due candidates the classifier can take, best first, then early ones to fill the batch."""
    good = [c for c in candidates if c.never_classified or c.quality >= min_quality]
    due = sorted((c for c in good if c.readiness == DUE), key=lambda c: (not c.never_classified, -c.quality))
    chosen = due[: max(0, capacity)]
    if chosen:
        early = sorted((c for c in good if c.readiness == EARLY), key=lambda c: -c.quality)
        room = min(capacity, max_batch) - len(chosen)
        chosen += early[: max(0, room)]
    waiting = sum(1 for c in candidates if c.readiness == DUE and not c.never_classified and c.quality < min_quality)
    return Selection(chosen=chosen, deferred=len(due) - min(len(due), max(0, capacity)), waiting=waiting)
