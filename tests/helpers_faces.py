"""Real face images and synthetic scenes built from them, for detector, tracker and quality tests.

Faces are cut from `skimage.data.astronaut()` and from a frame of the bundled sample clip (two people);
scenes paste them onto `skimage.data.rocket()` (which has no face) along known paths.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from runtime.crop import crop_face

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
TWO_PEOPLE_CLIP = SAMPLES / "head-pose-face-detection-female-and-male.mp4"
# Face boxes found by the full-range detector in frame 0 of TWO_PEOPLE_CLIP and in astronaut().
TWO_PEOPLE_BOXES = [(61, 75, 127, 141), (331, 68, 397, 134)]
ASTRONAUT_BOX = (173, 67, 276, 170)


def clip_frame_rgb(path: Path, index: int = 0) -> np.ndarray:
    video = cv2.VideoCapture(str(path))
    for _ in range(index + 1):
        ok, frame = video.read()
        assert ok, f"{path} has fewer than {index + 1} frames"
    video.release()
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


@lru_cache(maxsize=None)
def _face_patches(side: int) -> tuple[np.ndarray, ...]:
    frame = clip_frame_rgb(TWO_PEOPLE_CLIP)
    patches = [crop_face(data.astronaut(), ASTRONAUT_BOX, side, margin=0.6)]
    patches += [crop_face(frame, box, side, margin=0.6) for box in TWO_PEOPLE_BOXES]
    return tuple(patches)


def face_patches(side: int = 128) -> list[np.ndarray]:
    """Three real faces (astronaut, woman, man), each a side×side RGB patch with the face in the middle."""
    return [p.copy() for p in _face_patches(side)]


def background(width: int = 640, height: int = 480) -> np.ndarray:
    return cv2.resize(data.rocket(), (width, height), interpolation=cv2.INTER_AREA)


def paste(scene: np.ndarray, patch: np.ndarray, center: tuple[float, float]) -> None:
    """Paste `patch` centred at `center` (x, y), clipped to the scene; later pastes cover earlier ones."""
    side = patch.shape[0]
    left, top = int(round(center[0] - side / 2)), int(round(center[1] - side / 2))
    x1, y1 = max(left, 0), max(top, 0)
    x2, y2 = min(left + side, scene.shape[1]), min(top + side, scene.shape[0])
    if x2 > x1 and y2 > y1:
        scene[y1:y2, x1:x2] = patch[y1 - top : y2 - top, x1 - left : x2 - left]


def render(patches: list[np.ndarray], centers: list[tuple[float, float]], base: np.ndarray) -> np.ndarray:
    scene = base.copy()
    for patch, center in zip(patches, centers):
        paste(scene, patch, center)
    return scene


def crossing_paths(frames: int, width: int = 640, height: int = 480) -> np.ndarray:
    """Centres [frames, 2 faces, (x, y)]: face 0 walks right, face 1 walks left, passing partly in front.

    Their vertical offset (0.45 face sides) makes them overlap partly rather than swap places exactly.
    """
    t = np.linspace(0.0, 1.0, frames)[:, None]
    start_a, end_a = np.array([110.0, 0.45 * height]), np.array([width - 110.0, 0.45 * height])
    start_b, end_b = np.array([width - 110.0, 0.45 * height + 58]), np.array([110.0, 0.45 * height + 58])
    return np.stack([start_a + t * (end_a - start_a), start_b + t * (end_b - start_b)], axis=1)
