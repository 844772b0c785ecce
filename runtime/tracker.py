"""Face tracking: stable ids through brief occlusions, partial overlaps and missed detections.

Hand-written rather than a library because none fits the runtime: supervision's ByteTrack is deprecated
(and IoU-only, so ids change after a brief loss), Roboflow's `trackers` pulls in supervision, BoxMOT is
AGPL and needs torch, and norfair counts frames rather than seconds. Faces are few and move smoothly, so a
small SORT-style tracker does: constant-velocity prediction of the box centre, a cost of (1 − IoU) plus
centre distance in face sizes, and optimal assignment with scipy's `linear_sum_assignment`.

All timing is in seconds, so behaviour does not depend on the frame rate:
- a new detection starts a `tentative` track, `confirmed` after `confirm_hits` consecutive matches
  (a tentative track that misses once is dropped);
- a confirmed track unmatched for `lost_after` seconds is `lost` (still predicted, re-matched with the
  same id), and removed after `remove_after` seconds;
- confirmed and lost tracks are matched before tentative ones, so a spurious new track never steals
  the detection of an established face.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from runtime.types import Box, Detection, Track, TrackState

_FORBIDDEN = 1e6  # cost of a pair outside the gates


@dataclass(frozen=True)
class Association:
    """When a detection may continue a track."""

    min_iou: float = 0.1  # a pair matches if the boxes overlap at least this much ...
    max_center_distance: float = 0.8  # ... or their centres are at most this many face sizes apart
    max_size_ratio: float = 2.0  # and neither box is more than this many times larger than the other
    velocity_smoothing: float = 0.5  # weight of the newest velocity measurement (0..1)
    steady_size_change: float = 1.15  # a box changing size faster than this per match keeps the old velocity
    max_prediction: float = 0.5  # seconds: beyond this, a missing track's box stops moving
    max_tracks: int = 32  # live tracks; bounds the event queue downstream


@dataclass(frozen=True)
class TrackerUpdate:
    tracks: list[Track]  # all live tracks after this update (tentative, confirmed, lost)
    appeared: list[Track]  # tracks confirmed in this update
    disappeared: list[Track]  # confirmed tracks removed in this update


class _LiveTrack:
    """The tracker's own mutable record of one track; callers only ever see `Track` snapshots."""

    def __init__(self, track_id: int, detection: Detection, timestamp: float) -> None:
        self.id = track_id
        self.box = detection.box
        self.detection: Detection | None = detection
        self.velocity = np.zeros(2)  # centre velocity, pixels per second
        self.last_seen = timestamp
        self.hits = 1
        self.misses = 0
        self.state = TrackState.TENTATIVE
        self.last_classified: float | None = None

    def predicted_box(self, timestamp: float, max_prediction: float) -> Box:
        dt = min(timestamp - self.last_seen, max_prediction)
        dx, dy = self.velocity * dt
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)

    def match(self, detection: Detection, timestamp: float, smoothing: float, max_size_change: float) -> None:
        dt = timestamp - self.last_seen
        # A box that shrinks or grows fast is being occluded or uncovered: its centre jumps, not the face.
        steady = 1.0 / max_size_change <= _size(detection.box) / max(_size(self.box), 1e-6) <= max_size_change
        if dt > 0 and steady:
            measured = (_center(detection.box) - _center(self.box)) / dt
            self.velocity = smoothing * measured + (1.0 - smoothing) * self.velocity
        self.box, self.detection, self.last_seen = detection.box, detection, timestamp
        self.hits += 1
        self.misses = 0

    def miss(self) -> None:
        self.detection = None
        self.misses += 1

    def snapshot(self, box: Box | None = None) -> Track:
        return Track(id=self.id, box=box or self.box, detection=self.detection, hits=self.hits,
                     misses=self.misses, state=self.state, last_classified=self.last_classified)


class FaceTracker:
    def __init__(self, confirm_hits: int = 3, lost_after: float = 0.25, remove_after: float = 1.0,
                 **association_settings) -> None:
        if confirm_hits < 1 or lost_after < 0 or remove_after < lost_after:
            raise ValueError("tracker needs confirm_hits >= 1 and 0 <= lost_after <= remove_after, got "
                             f"confirm_hits={confirm_hits}, lost_after={lost_after}, remove_after={remove_after}")
        self.confirm_hits = confirm_hits
        self.lost_after = lost_after
        self.remove_after = remove_after
        self.association = Association(**association_settings)
        self._tracks: list[_LiveTrack] = []
        self._next_id = 1

    def update(self, detections: list[Detection], timestamp: float) -> TrackerUpdate:
        # a track unseen for longer than remove_after is gone before association: after an outage it never
        # re-attaches to whoever stands there now
        stale = [t for t in self._tracks if timestamp - t.last_seen > self.remove_after]
        self._tracks = [t for t in self._tracks if t not in stale]
        disappeared = [t.snapshot() for t in stale if t.state != TrackState.TENTATIVE]
        established = [t for t in self._tracks if t.state != TrackState.TENTATIVE]
        tentative = [t for t in self._tracks if t.state == TrackState.TENTATIVE]
        matched_est, rest = self._associate(established, list(detections), timestamp)
        matched_tent, unmatched = self._associate(tentative, rest, timestamp)

        appeared: list[Track] = []
        for track, detection in matched_est + matched_tent:
            track.match(detection, timestamp, self.association.velocity_smoothing,
                        self.association.steady_size_change)
            if track.state == TrackState.LOST:
                track.state = TrackState.CONFIRMED
            elif track.state == TrackState.TENTATIVE and track.hits >= self.confirm_hits:
                track.state = TrackState.CONFIRMED
                appeared.append(track)
        matched_ids = {track.id for track, _ in matched_est + matched_tent}

        for track in [t for t in self._tracks if t.id not in matched_ids]:
            track.miss()
            unseen = timestamp - track.last_seen
            if track.state == TrackState.TENTATIVE:
                self._tracks.remove(track)
            elif unseen > self.remove_after:
                self._tracks.remove(track)
                disappeared.append(track.snapshot())
            elif unseen > self.lost_after:
                track.state = TrackState.LOST

        for detection in unmatched:
            if len(self._tracks) >= self.association.max_tracks:
                break
            self._tracks.append(_LiveTrack(self._next_id, detection, timestamp))
            self._next_id += 1
            if self.confirm_hits == 1:
                self._tracks[-1].state = TrackState.CONFIRMED
                appeared.append(self._tracks[-1])

        tracks = [t.snapshot(self._shown_box(t, timestamp)) for t in self._tracks]
        by_id = {t.id: t for t in tracks}
        return TrackerUpdate(tracks=tracks, appeared=[by_id[t.id] for t in appeared], disappeared=disappeared)

    def mark_classified(self, track_id: int, timestamp: float) -> None:
        """Record a classification request; ignored for a track removed in the meantime."""
        for track in self._tracks:
            if track.id == track_id:
                track.last_classified = timestamp

    def close_all(self) -> list[Track]:
        """At shutdown: remove every track; returns the confirmed (and lost) ones, for `disappeared`."""
        closing = [t.snapshot() for t in self._tracks if t.state != TrackState.TENTATIVE]
        self._tracks.clear()
        return closing

    def _shown_box(self, track: _LiveTrack, timestamp: float) -> Box:
        if track.detection is not None:
            return track.box
        return track.predicted_box(timestamp, self.association.max_prediction)

    def _associate(self, tracks: list[_LiveTrack], detections: list[Detection], timestamp: float
                   ) -> tuple[list[tuple[_LiveTrack, Detection]], list[Detection]]:
        """Optimal one-to-one matching inside the gates; returns the pairs and the unmatched detections."""
        if not tracks or not detections:
            return [], detections
        predicted = [t.predicted_box(timestamp, self.association.max_prediction) for t in tracks]
        cost = np.array([[self._pair_cost(p, d.box) for d in detections] for p in predicted])
        rows, cols = linear_sum_assignment(cost)
        pairs = [(tracks[r], detections[c]) for r, c in zip(rows, cols) if cost[r, c] < _FORBIDDEN]
        used = {id(d) for _, d in pairs}
        return pairs, [d for d in detections if id(d) not in used]

    def _pair_cost(self, predicted: Box, box: Box) -> float:
        size_a, size_b = _size(predicted), _size(box)
        if max(size_a, size_b) > self.association.max_size_ratio * max(min(size_a, size_b), 1e-6):
            return _FORBIDDEN
        overlap = _iou(predicted, box)
        distance = float(np.linalg.norm(_center(predicted) - _center(box))) / max((size_a + size_b) / 2, 1e-6)
        if overlap < self.association.min_iou and distance > self.association.max_center_distance:
            return _FORBIDDEN
        return (1.0 - overlap) + distance


def _center(box: Box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def _size(box: Box) -> float:
    return max(box[2] - box[0], box[3] - box[1])


def _iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
