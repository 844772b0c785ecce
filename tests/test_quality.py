"""Crop quality on real faces: sharper, larger and more frontal crops score higher."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from helpers_faces import SAMPLES, clip_frame_rgb
from runtime.crop import crop_face
from runtime.detector import FaceDetector
from runtime.quality import face_quality, frontalness
from runtime.types import Detection

SIZE = 112


@pytest.fixture(scope="module")
def detector():
    with FaceDetector(running_mode="image") as found:
        yield found


def quality_of(detector, image):
    (detection,) = detector.detect(image)
    return face_quality(detection, crop_face(image, detection.box, SIZE))


def test_blurred_astronaut_scores_lower(detector):
    image = data.astronaut()
    sharp = quality_of(detector, image)
    blurred = [quality_of(detector, cv2.GaussianBlur(image, (0, 0), sigma)) for sigma in (1.0, 2.5)]
    assert sharp.sharpness > blurred[0].sharpness > blurred[1].sharpness
    assert sharp.total > blurred[0].total > blurred[1].total
    assert all(0.0 <= q.total <= 1.0 for q in [sharp, *blurred])


def test_smaller_face_scores_lower(detector):
    image = data.astronaut()
    large = quality_of(detector, image)
    small = quality_of(detector, cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA))
    assert large.size > 0.8 and small.size == pytest.approx(large.size / 2, rel=0.15)
    assert small.total < large.total


def test_turned_head_scores_less_frontal(detector):
    """In the head-pose clip the woman (left) starts in profile and then turns towards the camera."""
    clip = SAMPLES / "head-pose-face-detection-female-and-male.mp4"

    def woman_frontalness(index: int) -> float:
        found = detector.detect(clip_frame_rgb(clip, index))
        return frontalness(min(found, key=lambda d: d.box[0]).keypoints)

    turned = [woman_frontalness(i) for i in (0, 2)]
    facing = [woman_frontalness(i) for i in (15, 30)]
    assert max(turned) < 0.2 < min(facing)


def test_frontalness_geometry_ignores_roll():
    def keypoints(nose_offset: float, roll_degrees: float) -> np.ndarray:
        points = np.array([[-20.0, 0.0], [20.0, 0.0], [nose_offset, 15.0], [0.0, 30.0], [-35.0, 5.0], [35.0, 5.0]])
        angle = np.deg2rad(roll_degrees)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        return points @ rotation.T + 100.0

    assert frontalness(keypoints(0.0, 0.0)) == pytest.approx(1.0)
    assert frontalness(keypoints(0.0, 40.0)) == pytest.approx(1.0)
    assert frontalness(keypoints(10.0, 40.0)) == pytest.approx(0.5)
    assert frontalness(keypoints(-25.0, 0.0)) == 0.0


def test_components_multiply():
    detection = Detection(box=(0, 0, 56, 56), score=0.9,
                          keypoints=np.array([[10, 20], [40, 20], [25, 30], [25, 45], [0, 25], [56, 25]], np.float32))
    flat = np.full((SIZE, SIZE, 3), 128, np.uint8)
    quality = face_quality(detection, flat)
    assert quality.size == pytest.approx(0.5) and quality.sharpness == 0.0 and quality.total == 0.0
