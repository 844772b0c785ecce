"""The overlay's drawing (runtime/overlay.py draw/layout) on real frames with real MediaPipe faces."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from helpers_faces import background, face_patches, render
from runtime.detector import FaceDetector
from runtime.jsonl import RANDOM_WEIGHTS_WARNING
from runtime.overlay import COLORS, Status, ascii_text, banner_lines, draw, layout
from runtime.types import Attributes, Frame, FrameResult, TaskAttribute, Track, TrackResult, TrackState

STATUS = Status(fps=11.9, latency_ms=83.0, model="pe-core-t16-384/dora fp32", random_weights=True)


@pytest.fixture(scope="module")
def neighbours():
    """Three real faces of ~75 px standing close together, as a group in front of a robot, and their detections."""
    scene = render(face_patches(120), [(220.0, 200.0), (305.0, 225.0), (390.0, 200.0)], background())
    with FaceDetector("full_range", running_mode="image") as detector:
        found = sorted(detector.detect(scene), key=lambda d: d.box[0])
    assert len(found) == 3
    return cv2.cvtColor(scene, cv2.COLOR_RGB2BGR), found


def full_attributes() -> Attributes:
    def task(labels, label, confidence):
        probs = np.full(len(labels), (1 - confidence) / (len(labels) - 1))
        probs[labels.index(label)] = confidence
        return TaskAttribute(tuple(labels), probs, label, confidence, True, 5)

    return Attributes(tasks={"age": task(["20-29", "30-39", "40-49"], "30-39", 0.61),
                             "gender": task(["Male", "Female"], "Female", 0.93),
                             "emotion": task(["Happy", "Neutral", "Sad"], "Happy", 0.72)},
                      age_years=34.2, observations=5)


def frame_result(image, tracks) -> FrameResult:
    return FrameResult(frame=Frame(image=image, index=0, timestamp=0.0, source="test"), tracks=tracks, latencies={})


def track(i, detection, state=TrackState.CONFIRMED, attributes=None, matched=True) -> TrackResult:
    return TrackResult(Track(id=i, box=detection.box, detection=detection if matched else None, hits=5,
                             misses=0 if matched else 3, state=state), attributes or Attributes())


def overlaps(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_neighbours_labels_cover_neither_each_other_nor_faces(neighbours):
    image, found = neighbours
    result = frame_result(image, [track(i + 1, d, attributes=full_attributes()) for i, d in enumerate(found)])
    boxes, labels = layout(result, STATUS)
    faces = [b.rect for b in boxes]
    track_labels = [label for label in labels if label.lines[0].startswith("#")]
    assert len(track_labels) == 3 and all(len(label.lines) == 5 for label in track_labels)
    for a, b in itertools.combinations([label.rect for label in labels], 2):
        assert not overlaps(a, b)
    for label in track_labels:
        assert not any(overlaps(label.rect, face) for face in faces)
        x1, y1, x2, y2 = label.rect
        assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
    # every label right below its face (the layout before) would have covered a neighbour's label or face
    below = []
    for label, detection in zip(track_labels, found):
        x1, y2 = round(detection.box[0]), round(detection.box[3]) + 4
        below.append((x1, y2, x1 + label.rect[2] - label.rect[0], y2 + label.rect[3] - label.rect[1]))
    assert any(overlaps(a, b) for a, b in itertools.combinations(below, 2)) or \
        any(overlaps(r, face) for r, own in zip(below, faces) for face in faces if face != own)
    assert draw(result, STATUS).shape == image.shape


def test_a_face_at_the_bottom_gets_its_label_above(neighbours):
    image, found = neighbours
    low = found[0]
    shift = image.shape[0] - 4 - low.box[3]
    moved = type(low)(box=(low.box[0], low.box[1] + shift, low.box[2], low.box[3] + shift), score=low.score,
                      keypoints=low.keypoints)
    _, labels = layout(frame_result(image, [track(1, moved, attributes=full_attributes())]), STATUS)
    assert labels[-1].rect[3] <= moved.box[1]


def test_every_drawn_text_is_ascii(neighbours):
    image, found = neighbours
    status = Status(fps=9.0, latency_ms=None, model="pe-core \u2014 t16 \u00b11\u00b0 caf\u00e9 \u2248", random_weights=True)
    odd = Attributes(tasks={"emotion": TaskAttribute(("Gl\u00fccklich", "Neutral"), np.array([0.8, 0.2]), "Gl\u00fccklich",
                                                    0.8, False, 3)}, age_years=None, observations=3)
    _, labels = layout(frame_result(image, [track(7, found[0], attributes=odd)]), status)
    texts = [line for label in labels for line in label.lines]
    assert all(text.isascii() and text.isprintable() for text in texts)
    assert "RANDOM WEIGHTS - not real cues" in texts and "\u2014" in RANDOM_WEIGHTS_WARNING
    assert "9.0 fps  latency -  model: pe-core - t16 +/-1 deg cafe ~" in texts
    assert "Glucklich? 0.80" in texts
    assert ascii_text("a\u2013b \u00d7 \u4e2d") == "a-b x ?"
    assert [text for text, _ in banner_lines(STATUS)] == ["11.9 fps  latency 83 ms  model: pe-core-t16-384/dora fp32",
                                                          "RANDOM WEIGHTS - not real cues"]


def test_lost_tracks_are_dashed_with_only_their_id(neighbours):
    image, found = neighbours
    lost = track(4, found[1], state=TrackState.LOST, attributes=full_attributes(), matched=False)
    result = frame_result(image, [track(1, found[0], attributes=full_attributes()), lost])
    boxes, labels = layout(result, STATUS)
    shapes = {b.rect: b for b in boxes}
    confirmed_box, lost_box = shapes[tuple(round(v) for v in found[0].box)], shapes[tuple(round(v) for v in found[1].box)]
    assert not confirmed_box.dashed and confirmed_box.thickness == 2
    assert lost_box.dashed and lost_box.thickness == 1
    assert ("#4",) in [label.lines for label in labels]
    # painted: the lost box's top edge has gaps, the confirmed one's is solid
    drawn = draw(result, STATUS)

    def edge_fill(rect, color):
        x1, y1, x2, _ = rect
        return float(np.mean(np.all(drawn[y1, x1:x2] == color, axis=1)))

    assert edge_fill(confirmed_box.rect, COLORS[TrackState.CONFIRMED]) > 0.95
    assert 0.3 < edge_fill(lost_box.rect, COLORS[TrackState.LOST]) < 0.7


def test_tentative_and_new_tracks_carry_no_labels(neighbours):
    image, found = neighbours
    result = frame_result(image, [track(1, found[0], state=TrackState.TENTATIVE, attributes=full_attributes()),
                                  track(2, found[1])])  # just confirmed: no readings yet
    boxes, labels = layout(result, STATUS)
    assert len(boxes) == 2 and [b.thickness for b in boxes] == [1, 2]
    track_labels = [label.lines for label in labels if label.lines[0].startswith("#")]
    assert track_labels == [("#2",)]


def test_a_predicted_box_is_drawn_thinner(neighbours):
    image, found = neighbours
    boxes, _ = layout(frame_result(image, [track(1, found[0], matched=False)]), STATUS)
    assert boxes[0].thickness == 1 and not boxes[0].dashed
