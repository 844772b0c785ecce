"""The one face-crop function (design.md, "Preprocessing: one function for everyone").

Export verification, calibration, training and the runtime all call `crop_face`, so what the model
sees in the field is what it was verified and calibrated on. The rule:
- the square side is max(w, h) × (1 + margin), centred on the detector box's centre;
- parts of the square outside the image are black (zero padding);
- the square is resized to size×size with INTER_AREA when shrinking, INTER_LINEAR when enlarging.
Channel order is kept as given: pass RGB, get RGB.
"""
from __future__ import annotations

import cv2
import numpy as np

from runtime.types import Box


def square_box(box: Box, margin: float = 0.0) -> tuple[int, int, int]:
    """The crop square of `box` as integer (left, top, side) in pixels."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1.0 + margin)
    side_px = max(1, int(round(side)))
    left = int(round((x1 + x2) / 2.0 - side_px / 2.0))
    top = int(round((y1 + y2) / 2.0 - side_px / 2.0))
    return left, top, side_px


def crop_face(image: np.ndarray, box: Box, size: int, margin: float = 0.0) -> np.ndarray:
    """Cut the square around `box` out of an H×W×3 uint8 image and resize it to size×size×3."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"crop_face expects an H×W×3 uint8 image, got {image.shape} {image.dtype}")
    left, top, side = square_box(box, margin)
    height, width = image.shape[:2]
    square = np.zeros((side, side, 3), dtype=np.uint8)
    src_x1, src_y1 = max(left, 0), max(top, 0)
    src_x2, src_y2 = min(left + side, width), min(top + side, height)
    if src_x2 > src_x1 and src_y2 > src_y1:
        square[src_y1 - top : src_y2 - top, src_x1 - left : src_x2 - left] = image[src_y1:src_y2, src_x1:src_x2]
    if side == size:
        return square
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def resize_chip(chip: np.ndarray, size: int) -> np.ndarray:
    """A face chip that is already cut (the `--crops` inputs): its whole extent is the box."""
    height, width = chip.shape[:2]
    return crop_face(chip, (0.0, 0.0, float(width), float(height)), size, margin=0.0)
