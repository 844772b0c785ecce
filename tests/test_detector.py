"""Real MediaPipe detection on real images: astronaut(), frames of the bundled clips, faces at the border."""
from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from helpers_faces import SAMPLES, background, clip_frame_rgb, face_patches, render
from runtime.detector import MODELS, FaceDetector

EYE_R, EYE_L, NOSE, MOUTH = 0, 1, 2, 3


@pytest.fixture(scope="module")
def image_detector():
    with FaceDetector("full_range", running_mode="image") as found:
        yield found


def assert_plausible_face(detection, width: int, height: int) -> None:
    x1, y1, x2, y2 = detection.box
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert 0.5 <= detection.score <= 1.0
    assert 0.75 < (x2 - x1) / (y2 - y1) < 1.33  # BlazeFace boxes are about square
    points = detection.keypoints
    assert points.shape == (6, 2)
    inside = (points[:4, 0] >= x1) & (points[:4, 0] <= x2) & (points[:4, 1] >= y1) & (points[:4, 1] <= y2)
    assert inside.all(), "eyes, nose and mouth lie inside the box (in pixels, not normalised)"
    assert max(points[EYE_R, 1], points[EYE_L, 1]) < points[NOSE, 1] < points[MOUTH, 1]
    assert min(points[EYE_R, 0], points[EYE_L, 0]) < points[NOSE, 0] < max(points[EYE_R, 0], points[EYE_L, 0])


def test_astronaut_face(image_detector):
    image = data.astronaut()
    found = image_detector.detect(image)
    assert len(found) == 1
    assert_plausible_face(found[0], image.shape[1], image.shape[0])
    x1, y1, x2, y2 = found[0].box
    assert 60 < x2 - x1 < 200 and y2 < image.shape[0] / 2  # her face is in the upper half, about 100 px


def test_both_faces_in_a_sample_frame(image_detector):
    frame = clip_frame_rgb(SAMPLES / "head-pose-face-detection-female-and-male.mp4", 0)
    found = sorted(image_detector.detect(frame), key=lambda d: d.box[0])
    assert len(found) == 2
    for detection in found:
        assert_plausible_face(detection, frame.shape[1], frame.shape[0])
    assert found[0].box[2] < found[1].box[0]  # two separate people, side by side


def test_full_range_finds_the_walking_people_that_short_range_misses(image_detector):
    frame = clip_frame_rgb(SAMPLES / "face-demographics-walking-and-pause.mp4", 10)
    with FaceDetector("short_range", running_mode="image") as short_range:
        short = short_range.detect(frame)
    full = image_detector.detect(frame)
    assert len(full) == 3  # three people walk towards the camera in this clip
    assert len(short) < len(full)


def test_face_cut_by_the_border_gets_a_clipped_box(image_detector):
    """MediaPipe's box for a face cut by the right border reaches past the image; we clip it."""
    scene = render([face_patches(160)[1]], [(610.0, 200.0)], background())
    at_border = [d for d in image_detector.detect(scene) if d.box[2] > 590]
    assert len(at_border) == 1
    x1, y1, x2, y2 = at_border[0].box
    assert x2 == scene.shape[1] and 530 < x1 < 590 and y2 - y1 > x2 - x1


def test_video_mode_accepts_repeated_and_backward_timestamps():
    image = data.astronaut()
    with FaceDetector(running_mode="video") as detector:
        counts = [len(detector.detect(image, t)) for t in (5.0, 5.0, 4.0, 5.001, None)]
    assert counts == [1, 1, 1, 1, 1]


def test_min_face_size_is_the_side_in_pixels():
    image = data.astronaut()
    with FaceDetector(min_face_size=90, running_mode="image") as detector:
        assert len(detector.detect(image)) == 1
    with FaceDetector(min_face_size=150, running_mode="image") as detector:
        assert detector.detect(image) == []


def test_vendored_models_exist():
    assert all(path.is_file() and path.stat().st_size > 100_000 for path in MODELS.values())


def test_bad_models_and_images_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        FaceDetector(str(tmp_path / "nope.tflite"))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a tflite model")
    with pytest.raises(ValueError, match="junk.tflite"):
        FaceDetector(str(junk))
    with pytest.raises(ValueError, match="running_mode"):
        FaceDetector(running_mode="stream")
    with FaceDetector(running_mode="image") as detector, pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((64, 64), np.uint8))
