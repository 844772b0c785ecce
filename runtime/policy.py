"""Which tracks to classify in this frame (design.md, "Threads and queues"; "Never classify what has not changed").

A confirmed track matched in this frame, with no request in flight, is
- *due* when it was never classified or its last classification is older than `interval`;
- *early* when its last classification is older than `batch_fill × interval`: early tracks ride along
  in a round that has a due track, so the tracks' rounds fall into step and share one batched inference
  instead of drifting into one batch-1 inference each.
Among the due tracks: never-classified first, then the best quality first; a crop below the minimum
quality waits for a better one unless its track was never classified or has waited `max_quality_wait`
seconds past due (a person who stays small or blurred is still re-read; the smoothing gives the reading
a low weight). At most `capacity` are chosen
(what the classifier can take now); the rest are deferred and counted.
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.types import Track, TrackState

DUE, EARLY = "due", "early"


@dataclass(frozen=True, eq=False)
class Candidate:
    track: Track
    quality: float
    readiness: str = DUE  # DUE or EARLY
    overdue: bool = False  # waited long enough for a better crop: take this one whatever its quality

    @property
    def never_classified(self) -> bool:
        return self.track.last_classified is None

    def passes(self, min_quality: float) -> bool:
        return self.never_classified or self.overdue or self.quality >= min_quality


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


def overdue(track: Track, now: float, interval: float, max_quality_wait: float) -> bool:
    return track.last_classified is not None and now - track.last_classified >= interval + max_quality_wait


def select(candidates: list[Candidate], capacity: int, max_batch: int, min_quality: float) -> Selection:
    """The due candidates the classifier can take, best first, then early ones to fill the batch."""
    good = [c for c in candidates if c.passes(min_quality)]
    due = sorted((c for c in good if c.readiness == DUE), key=lambda c: (not c.never_classified, -c.quality))
    chosen = due[: max(0, capacity)]
    if chosen:
        early = sorted((c for c in good if c.readiness == EARLY), key=lambda c: -c.quality)
        room = min(capacity, max_batch) - len(chosen)
        chosen += early[: max(0, room)]
    waiting = sum(1 for c in candidates if c.readiness == DUE and not c.passes(min_quality))
    return Selection(chosen=chosen, deferred=len(due) - min(len(due), max(0, capacity)), waiting=waiting)
