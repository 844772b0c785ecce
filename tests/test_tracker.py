"""The tracker fed by the real MediaPipe detector on real faces moving over a real background."""
from __future__ import annotations

import numpy as np
import pytest

from helpers_faces import background, crossing_paths, face_patches, render
from runtime.detector import FaceDetector
from runtime.tracker import FaceTracker
from runtime.types import Detection, TrackState

FPS = 30.0


@pytest.fixture(scope="module")
def detector():
    with FaceDetector("full_range", running_mode="image") as found:
        yield found


def identities(paths: np.ndarray, updates, side: float) -> list[list[int | None]]:
    """Per ground-truth face, per frame: the id of the confirmed, detected track on it (None if none)."""
    per_face = [[] for _ in range(paths.shape[1])]
    for frame_paths, update in zip(paths, updates):
        for face, center in enumerate(frame_paths):
            on_face = [t.id for t in update.tracks if t.state == TrackState.CONFIRMED and t.detection is not None
                       and np.linalg.norm(np.subtract(_center(t.box), center)) < side / 2]
            per_face[face].append(on_face[0] if on_face else None)
    return per_face


def fragmentations(ids: list[int | None]) -> int:
    """How many times the face's id changed (gaps, where nothing was tracked on it, are not changes)."""
    seen = [i for i in ids if i is not None]
    return sum(a != b for a, b in zip(seen, seen[1:]))


def _center(box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


@pytest.mark.parametrize("faces", [(0, 2), (1, 0)], ids=["astronaut-man", "woman-astronaut"])
def test_crossing_faces_keep_their_ids(detector, faces):
    patches, base = face_patches(128), background()
    paths = crossing_paths(60)
    tracker = FaceTracker()
    updates, detected = [], []
    for index, centers in enumerate(paths):
        detections = detector.detect(render([patches[i] for i in faces], list(centers), base))
        detected.append(len(detections))
        updates.append(tracker.update(detections, index / FPS))

    assert min(detected) < 2, "the faces never occluded each other: the test would not test occlusion"
    ids = identities(paths, updates, side=80)
    before, after = [face_ids[5:15] for face_ids in ids], [face_ids[-10:] for face_ids in ids]
    for face_before, face_after in zip(before, after):
        assert None not in face_before and None not in face_after
        assert len(set(face_before)) == 1 and set(face_after) == set(face_before)
    assert before[0][0] != before[1][0]
    assert [fragmentations(face_ids) for face_ids in ids] == [0, 0]
    assert not any(update.disappeared for update in updates)
    assert sum(len(update.appeared) for update in updates) == 2


def test_missed_detections_keep_the_id_through_a_lost_spell(detector):
    patch, base = face_patches(128)[0], background()
    frames = 45
    xs = np.linspace(120.0, 520.0, frames)
    gap = range(15, 27)  # 0.4 s without detections: longer than lost_after, shorter than remove_after
    tracker = FaceTracker(confirm_hits=3, lost_after=0.25, remove_after=1.0)
    states, ids = [], set()
    for index, x in enumerate(xs):
        detections = detector.detect(render([patch], [(x, 230.0)], base))
        assert len(detections) == 1
        update = tracker.update([] if index in gap else detections, index / FPS)
        assert not update.disappeared
        confirmed = [t for t in update.tracks if t.state != TrackState.TENTATIVE]
        states.append(confirmed[0].state if confirmed else None)
        ids |= {t.id for t in confirmed}
    assert ids == {1}
    assert TrackState.LOST in states[gap.start:gap.stop]
    assert states[-1] == TrackState.CONFIRMED


def face(x: float, y: float = 100.0, side: float = 60.0) -> Detection:
    return Detection(box=(x, y, x + side, y + side), score=0.9, keypoints=np.zeros((6, 2), np.float32))


@pytest.mark.parametrize("fps", [10.0, 60.0])
def test_states_follow_seconds_not_frames(fps):
    tracker = FaceTracker(confirm_hits=3, lost_after=0.25, remove_after=1.0)
    appeared_at = disappeared_at = lost_at = None
    for index in range(int(3 * fps)):
        t = index / fps
        seen = t < 1.0  # the face leaves after one second
        update = tracker.update([face(100 + 30 * t)] if seen else [], t)
        if update.appeared:
            appeared_at = index
        if update.disappeared:
            assert disappeared_at is None and [d.id for d in update.disappeared] == [1]
            disappeared_at = t
        if lost_at is None and any(tr.state == TrackState.LOST for tr in update.tracks):
            lost_at = t
    assert appeared_at == 2  # the third consecutive match
    last_seen = (int(np.ceil(fps)) - 1) / fps
    assert lost_at - last_seen == pytest.approx(0.25, abs=1.01 / fps)
    assert disappeared_at - last_seen == pytest.approx(1.0, abs=1.01 / fps)
    assert tracker.update([], 10.0).tracks == []


def test_a_tentative_track_that_misses_is_dropped_and_never_appears():
    tracker = FaceTracker(confirm_hits=3)
    tracker.update([face(100)], 0.0)
    tracker.update([face(101)], 0.033)
    update = tracker.update([], 0.066)
    assert update.tracks == [] and update.appeared == [] and update.disappeared == []
    update = tracker.update([face(102)], 0.1)
    assert [t.id for t in update.tracks] == [2] and update.tracks[0].state == TrackState.TENTATIVE


def test_close_all_returns_confirmed_tracks_and_mark_classified_is_kept():
    tracker = FaceTracker(confirm_hits=2)
    for index in range(3):
        tracker.update([face(100), face(400)], index * 0.03)
    tracker.update([face(100), face(400), face(250, y=300)], 0.09)  # a new tentative track
    tracker.mark_classified(1, 0.09)
    tracker.mark_classified(99, 0.09)  # a removed track: ignored
    update = tracker.update([face(100), face(400)], 0.12)
    assert {t.id: t.last_classified for t in update.tracks} == {1: 0.09, 2: None}
    closing = tracker.close_all()
    assert sorted(t.id for t in closing) == [1, 2]
    assert tracker.update([], 0.2).tracks == []


def test_track_count_is_capped():
    tracker = FaceTracker(max_tracks=2)
    update = tracker.update([face(x) for x in (0, 100, 200, 300)], 0.0)
    assert len(update.tracks) == 2


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="remove_after"):
        FaceTracker(lost_after=2.0, remove_after=1.0)
    with pytest.raises(TypeError, match="max_trakcs"):
        FaceTracker(max_trakcs=4)
