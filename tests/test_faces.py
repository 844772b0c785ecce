"""load_face_crops on temp folders of real images (astronaut, a sample frame) and of face chips."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from helpers_faces import ASTRONAUT_BOX, SAMPLES, background, clip_frame_rgb
from runtime.crop import crop_face, resize_chip
from runtime.detector import FaceDetector
from runtime.faces import load_face_crops


def save_rgb(path, image: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture
def images_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    save_rgb(folder / "astronaut.png", data.astronaut())
    save_rgb(folder / "frame.png", clip_frame_rgb(SAMPLES / "head-pose-face-detection-female-and-male.mp4"))
    save_rgb(folder / "rocket.png", background())  # no face
    (folder / "broken.png").write_text("not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def test_faces_are_detected_and_cropped_like_the_runtime(images_dir):
    faces = load_face_crops(images_dir, size=64)
    assert faces.names == ["astronaut.png#0", "frame.png#0", "frame.png#1"]
    assert faces.crops.shape == (3, 64, 64, 3) and faces.crops.dtype == np.uint8
    with FaceDetector(running_mode="image") as detector:
        (astronaut,) = detector.detect(data.astronaut())
    np.testing.assert_array_equal(faces.crops[0], crop_face(data.astronaut(), astronaut.box, 64))  # RGB order


def test_margin_and_max_faces(images_dir):
    tight = load_face_crops(images_dir, size=64, max_faces=1)
    wide = load_face_crops(images_dir, size=64, margin=0.5, max_faces=1)
    assert tight.names == wide.names == ["astronaut.png#0"]
    assert not np.array_equal(tight.crops[0], wide.crops[0])
    assert len(load_face_crops(images_dir, size=32, max_faces=2).names) == 2


def test_chips_are_resized(tmp_path):
    folder = tmp_path / "chips"
    folder.mkdir()
    x1, y1, x2, y2 = ASTRONAUT_BOX
    square = data.astronaut()[y1:y2, x1:x2]
    wide = data.astronaut()[y1:y1 + 60, x1:x1 + 90]
    save_rgb(folder / "a.png", square)
    save_rgb(folder / "b.png", wide)
    faces = load_face_crops(crops_dir=folder, size=48)
    assert faces.names == ["a.png", "b.png"] and faces.crops.shape == (2, 48, 48, 3)
    np.testing.assert_array_equal(faces.crops[0], resize_chip(square, 48))
    np.testing.assert_array_equal(faces.crops[1], resize_chip(wide, 48))
    assert faces.crops[1][:5].max() == 0  # the wide chip is padded black above and below


def test_clear_errors(tmp_path, images_dir):
    with pytest.raises(ValueError, match="folder of images"):
        load_face_crops(size=64)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_face_crops(tmp_path / "missing", size=64)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_face_crops(empty, size=64)
    (empty / "broken.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="no readable images"):
        load_face_crops(empty, size=64)
    with pytest.raises(ValueError, match="no readable face crops"):
        load_face_crops(crops_dir=empty, size=64)
    save_rgb(empty / "rocket.png", background())
    with pytest.raises(ValueError, match="no faces found in the 1 images"):
        load_face_crops(empty, size=64)
