"""Face tracking: stable ids through crossings, brief occlusions, partial overlaps and missed detections.

Hand-written rather than a library because none fits the runtime: supervision's ByteTrack is deprecated
(and IoU-only, so ids change after a brief loss), Roboflow's `trackers` pulls in supervision, BoxMOT is
AGPL and needs torch, and norfair counts frames rather than seconds. Faces are few and move smoothly, so a
small SORT-style tracker does: constant-velocity prediction of the box centre, a cost of (1 − IoU) plus
centre distance in face sizes plus `appearance_weight` × the appearance distance (runtime/appearance.py,
when detections carry descriptors), and optimal assignment with scipy's `linear_sum_assignment`.
BENCHMARKS.md "Tracking" compares it with supervision's ByteTrack on the same detections.

All timing is in seconds, so behaviour does not depend on the frame rate:
- tracks unseen for longer than `remove_after` are removed first, before association, so a stale track
  never re-attaches to whoever stands there after a gap (`disappeared`);
- a new detection starts a `tentative` track, `confirmed` after `confirm_hits` consecutive matches
  (a tentative track that misses once is dropped);
- a confirmed track unmatched for `lost_after` seconds is `lost` (still predicted for `max_prediction`
  seconds, then held still, and re-matched with the same id); a lost track may also take a detection up to
  `reacquire_distance` face sizes away whose appearance is within `reacquire_appearance` of its own, so a
  face seen again after an occlusion or after leaving the image gets its own id back; and a new track
  that is about to be confirmed continues such a lost track instead (a face coming out from behind
  another is first detected half hidden, when its colours are mixed with the other's);
- predicted boxes are clipped to the image (`frame_size`); a track whose predicted box is mostly outside
  it stops moving and is `lost` at once;
- confirmed and lost tracks are matched before tentative ones, so a spurious new track never steals
  the detection of an established face;
- a track's descriptor is a running mean over the detections that no other face overlaps, so the
  colours of a face passing in front do not leak into it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from runtime.appearance import distance
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
    appearance_weight: float = 4.0  # cost per unit of appearance distance (0..1; same face ≈ 0.02, others ≈ 0.1)
    reacquire_distance: float = 3.0  # a lost track may take a detection this many face sizes away ...
    reacquire_appearance: float = 0.1  # ... whose appearance distance is at most this
    reacquire_wait: float = 0.4  # seconds a new track near a lost one stays tentative while its colours settle
    appearance_update: float = 0.2  # weight of a new unoverlapped descriptor in the track's running one
    min_visible: float = 0.5  # a predicted box with less of its area inside the image stops being predicted


@dataclass(frozen=True)
class TrackerUpdate:
    tracks: list[Track]  # all live tracks after this update (tentative, confirmed, lost)
    appeared: list[Track]  # tracks confirmed in this update
    disappeared: list[Track]  # confirmed (or lost) tracks removed in this update: unseen for remove_after


class _LiveTrack:
    """The tracker's own mutable record of one track; callers only ever see `Track` snapshots."""

    def __init__(self, track_id: int, detection: Detection, timestamp: float) -> None:
        self.id = track_id
        self.box = detection.box
        self.detection: Detection | None = detection
        self.appearance = detection.appearance
        self.velocity = np.zeros(2)  # centre velocity, pixels per second
        self.last_seen = self.first_seen = timestamp
        self.hits = 1
        self.misses = 0
        self.state = TrackState.TENTATIVE
        self.last_classified: float | None = None

    def predicted_box(self, timestamp: float, max_prediction: float) -> Box:
        dt = min(timestamp - self.last_seen, max_prediction)
        dx, dy = float(self.velocity[0]) * dt, float(self.velocity[1]) * dt
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)

    def match(self, detection: Detection, timestamp: float, settings: Association, alone: bool) -> None:
        dt = timestamp - self.last_seen
        (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = self.box, detection.box
        # A box that shrinks or grows fast is being occluded or uncovered: its centre jumps, not the face.
        change = settings.steady_size_change
        steady = 1.0 / change <= _size(detection.box) / max(_size(self.box), 1e-6) <= change
        if dt > settings.max_prediction:
            self.velocity = np.zeros(2)  # found again after a long gap: the old motion says nothing
        elif dt > 0 and steady:
            measured = np.array(((bx1 + bx2 - ax1 - ax2) / (2 * dt), (by1 + by2 - ay1 - ay2) / (2 * dt)))
            smoothing = settings.velocity_smoothing
            self.velocity = smoothing * measured + (1.0 - smoothing) * self.velocity
        if detection.appearance is not None and (alone or self.appearance is None):
            if self.appearance is None:
                self.appearance = detection.appearance
            else:
                weight = settings.appearance_update
                self.appearance = weight * detection.appearance + (1.0 - weight) * self.appearance
        self.box, self.detection, self.last_seen = detection.box, detection, timestamp
        self.hits += 1
        self.misses = 0

    def take_over(self, young: _LiveTrack) -> None:
        """Continue with a tentative track's detections (this lost track was found again under it)."""
        self.box, self.detection, self.last_seen = young.box, young.detection, young.last_seen
        self.velocity, self.hits, self.misses = young.velocity, self.hits + young.hits, 0
        self.state = TrackState.CONFIRMED

    def miss(self) -> None:
        self.detection = None
        self.misses += 1

    def hold(self, box: Box) -> None:
        """Stop predicting: the box stays where it is (it left the image)."""
        self.box, self.velocity = box, np.zeros(2)

    def snapshot(self, box: Box | None = None) -> Track:
        return Track(id=self.id, box=box or self.box, detection=self.detection, hits=self.hits,
                     misses=self.misses, state=self.state, last_classified=self.last_classified)


class FaceTracker:
    def __init__(self, confirm_hits: int = 3, lost_after: float = 0.25, remove_after: float = 2.0,
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

    def update(self, detections: list[Detection], timestamp: float,
               frame_size: tuple[int, int] | None = None) -> TrackerUpdate:
        """One frame's detections (with `appearance` descriptors if computed) at stream time `timestamp`;
        `frame_size` (width, height) clips predicted boxes to the image."""
        disappeared = [t.snapshot() for t in self._tracks
                       if timestamp - t.last_seen > self.remove_after and t.state != TrackState.TENTATIVE]
        self._tracks = [t for t in self._tracks if timestamp - t.last_seen <= self.remove_after]

        established = [t for t in self._tracks if t.state != TrackState.TENTATIVE]
        tentative = [t for t in self._tracks if t.state == TrackState.TENTATIVE]
        matched_est, rest = self._associate(established, detections, list(range(len(detections))), timestamp)
        matched_tent, unmatched = self._associate(tentative, detections, rest, timestamp)

        alone = _alone([d.box for d in detections])
        appeared: list[Track] = []
        matched_ids = {track.id for track, _ in matched_est + matched_tent}
        for track, index in matched_est + matched_tent:
            track.match(detections[index], timestamp, self.association, alone[index])
            if track.state == TrackState.LOST:
                track.state = TrackState.CONFIRMED
            elif track.state == TrackState.TENTATIVE and track.hits >= self.confirm_hits:
                heir, near = self._lost_twin(track, timestamp)
                if heir is not None:  # a lost face seen again, first half hidden: it keeps its id
                    heir.take_over(track)
                    self._tracks.remove(track)
                    matched_ids.add(heir.id)
                    continue
                if near and timestamp - track.first_seen < self.association.reacquire_wait:
                    continue  # stays tentative until its colours tell whether it is that lost face
                track.state = TrackState.CONFIRMED
                appeared.append(track)

        for track in [t for t in self._tracks if t.id not in matched_ids]:
            track.miss()
            if track.state == TrackState.TENTATIVE:
                self._tracks.remove(track)
                continue
            if timestamp - track.last_seen > self.lost_after:
                track.state = TrackState.LOST
            if frame_size is not None:
                predicted = track.predicted_box(timestamp, self.association.max_prediction)
                if _inside_fraction(predicted, frame_size) < self.association.min_visible:
                    track.hold(_clip(track.box, frame_size))
                    track.state = TrackState.LOST

        for index in unmatched:
            if len(self._tracks) >= self.association.max_tracks:
                break
            self._tracks.append(_LiveTrack(self._next_id, detections[index], timestamp))
            self._next_id += 1
            if self.confirm_hits == 1:
                self._tracks[-1].state = TrackState.CONFIRMED
                appeared.append(self._tracks[-1])

        tracks = [t.snapshot(self._shown_box(t, timestamp, frame_size)) for t in self._tracks]
        by_id = {t.id: t for t in tracks}
        return TrackerUpdate(tracks=tracks, appeared=[by_id[t.id] for t in appeared], disappeared=disappeared)

    def mark_classified(self, track_id: int, timestamp: float) -> None:
        """Record a classification request; ignored for a track removed in the meantime."""
        for track in self._tracks:
            if track.id == track_id:
                track.last_classified = timestamp

    def close_all(self) -> list[Track]:
        """At shutdown or a cut: remove every track; returns the confirmed (and lost) ones, for `disappeared`."""
        closing = [t.snapshot() for t in self._tracks if t.state != TrackState.TENTATIVE]
        self._tracks.clear()
        return closing

    def _lost_twin(self, young: _LiveTrack, timestamp: float) -> tuple[_LiveTrack | None, bool]:
        """The lost track that a track about to be confirmed continues (within `reacquire_distance` face sizes
        and `reacquire_appearance` of it, the closest in appearance) or None; and whether any lost track is
        that near."""
        settings = self.association
        seen = young.detection.appearance if young.detection is not None else None
        lost = [t for t in self._tracks if t.state == TrackState.LOST and t.appearance is not None]
        if seen is None or not lost:
            return None, False
        gap = self._costs(lost, [young.detection], timestamp, reacquire_all=True)[:, 0] < _FORBIDDEN
        appearance = np.array([distance(t.appearance, seen) for t in lost])
        candidates = [i for i in np.argsort(appearance) if appearance[i] <= settings.reacquire_appearance and gap[i]]
        return (lost[candidates[0]] if candidates else None), bool(gap.any())

    def _shown_box(self, track: _LiveTrack, timestamp: float, frame_size: tuple[int, int] | None) -> Box:
        box = track.box if track.detection is not None else track.predicted_box(timestamp, self.association.max_prediction)
        return box if frame_size is None else _clip(box, frame_size)

    def _associate(self, tracks: list[_LiveTrack], detections: list[Detection], free: list[int], timestamp: float
                   ) -> tuple[list[tuple[_LiveTrack, int]], list[int]]:
        """Optimal one-to-one matching of `tracks` to the detections at indices `free`, inside the gates;
        returns (track, detection index) pairs and the indices left unmatched."""
        if not tracks or not free:
            return [], free
        cost = self._costs(tracks, [detections[i] for i in free], timestamp)
        rows, cols = linear_sum_assignment(cost)
        pairs = [(tracks[r], free[c]) for r, c in zip(rows, cols) if cost[r, c] < _FORBIDDEN]
        used = {index for _, index in pairs}
        return pairs, [i for i in free if i not in used]

    def _costs(self, tracks: list[_LiveTrack], detections: list[Detection], timestamp: float,
               reacquire_all: bool = False) -> np.ndarray:
        """The cost of every (track, detection) pair, _FORBIDDEN outside the gates (vectorised: 10 faces
        cost a few tens of microseconds)."""
        settings = self.association
        predicted = np.array([t.predicted_box(timestamp, settings.max_prediction) for t in tracks])
        boxes = np.array([d.box for d in detections])
        size_p = np.maximum(predicted[:, 2] - predicted[:, 0], predicted[:, 3] - predicted[:, 1])[:, None]
        size_d = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[None, :]
        ratio = np.maximum(size_p, size_d) / np.maximum(np.minimum(size_p, size_d), 1e-6)
        overlap = _iou_matrix(predicted, boxes)
        centres_p = (predicted[:, :2] + predicted[:, 2:]) / 2
        centres_d = (boxes[:, :2] + boxes[:, 2:]) / 2
        distance = np.hypot(*(centres_p[:, None] - centres_d[None]).transpose(2, 0, 1)) / np.maximum((size_p + size_d) / 2, 1e-6)
        cost = (1.0 - overlap) + distance
        near = (overlap >= settings.min_iou) | (distance <= settings.max_center_distance)
        if reacquire_all:  # position only: the re-acquisition gate whatever the appearance
            return np.where((distance <= settings.reacquire_distance) & (ratio <= settings.max_size_ratio), cost, _FORBIDDEN)
        known = np.array([t.appearance is not None for t in tracks])[:, None] & \
            np.array([d.appearance is not None for d in detections])[None, :]
        if known.any():
            unknown = np.full(64, 1.0 / 64, np.float32)
            root_t = np.sqrt(np.array([unknown if t.appearance is None else t.appearance for t in tracks]))
            root_d = np.sqrt(np.array([unknown if d.appearance is None else d.appearance for d in detections]))
            appearance = np.where(known, np.clip(1.0 - root_t @ root_d.T, 0.0, 1.0), 0.0)
            cost = cost + settings.appearance_weight * appearance
            lost = np.array([t.state == TrackState.LOST for t in tracks])[:, None]
            near |= lost & known & (appearance <= settings.reacquire_appearance) & \
                (distance <= settings.reacquire_distance)
        return np.where(near & (ratio <= settings.max_size_ratio), cost, _FORBIDDEN)


def _size(box: Box) -> float:
    return max(box[2] - box[0], box[3] - box[1])


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _alone(boxes: list[Box]) -> list[bool]:
    """Per box: no other box overlaps it, nor the hair region above it (half a face height)."""
    if len(boxes) < 2:
        return [True] * len(boxes)
    grown = np.array([(x1, y1 - 0.5 * (y2 - y1), x2, y2) for x1, y1, x2, y2 in boxes])
    overlap = _iou_matrix(grown, np.array(boxes))
    np.fill_diagonal(overlap, 0.0)
    return list(~(overlap > 0).any(axis=1))


def _clip(box: Box, frame_size: tuple[int, int]) -> Box:
    width, height = frame_size
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def _inside_fraction(box: Box, frame_size: tuple[int, int]) -> float:
    area = (box[2] - box[0]) * (box[3] - box[1])
    x1, y1, x2, y2 = _clip(box, frame_size)
    return (x2 - x1) * (y2 - y1) / area if area > 0 else 0.0
