"""Which tracks to classify in this frame (design.md, "Threads and queues"; "Never classify what has not changed").

A confirmed track that was matched in this frame is *due* when it was never classified or its last
classification is older than the interval, and no request of it is still in flight. Among the due
tracks: never-classified tracks first, then the best quality first; a crop below the minimum quality
waits for a better one unless its track was never classified; at most `capacity` are chosen (what the
classifier can take now), the rest are deferred and counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.types import Track, TrackState


@dataclass(frozen=True)
class Candidate:
    track: Track
    crop: np.ndarray  # uint8 S×S×3 RGB
    quality: float

    @property
    def never_classified(self) -> bool:
        return self.track.last_classified is None


@dataclass(frozen=True)
class Selection:
    chosen: list[Candidate]
    deferred: int  # due, good enough, but the classifier was full
    waiting: int  # below the minimum quality, waiting for a better crop


def is_due(track: Track, now: float, interval: float, in_flight: set[int]) -> bool:
    if track.state != TrackState.CONFIRMED or track.detection is None or track.id in in_flight:
        return False
    return track.last_classified is None or now - track.last_classified >= interval


def select(candidates: list[Candidate], capacity: int, min_quality: float) -> Selection:
    eligible = [c for c in candidates if c.never_classified or c.quality >= min_quality]
    eligible.sort(key=lambda c: (not c.never_classified, -c.quality))
    chosen = eligible[: max(0, capacity)]
    return Selection(chosen=chosen, deferred=len(eligible) - len(chosen), waiting=len(candidates) - len(eligible))
