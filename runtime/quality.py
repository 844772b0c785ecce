"""Crop quality for the re-classification policy and for quality-weighted smoothing (design.md).

quality = size × frontalness × sharpness, each in [0, 1]:
- size: the box side over `reference_side` pixels, capped at 1 (small faces carry little detail);
- frontalness: how centred the nose tip is between the eyes, along the eye line (1 frontal, 0 when the nose
  reaches an eye, as in a profile);
- sharpness: the variance of the Laplacian of the grey crop over `sharpness_reference`, capped at 1. Pass
  crops of one size (the model's input size) so that values compare across faces.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from runtime.types import Detection

EYE_R, EYE_L, NOSE = 0, 1, 2


@dataclass(frozen=True)
class Quality:
    size: float
    frontalness: float
    sharpness: float
    total: float


def face_quality(detection: Detection, crop_rgb: np.ndarray, reference_side: float = 112.0,
                 sharpness_reference: float = 100.0) -> Quality:
    size = size_score(detection, reference_side)
    frontal = frontalness(detection.keypoints)
    sharp = sharpness(crop_rgb, sharpness_reference)
    return Quality(size=size, frontalness=frontal, sharpness=sharp, total=size * frontal * sharp)


def size_score(detection: Detection, reference_side: float) -> float:
    x1, y1, x2, y2 = detection.box
    return float(min(1.0, max(x2 - x1, y2 - y1) / reference_side))


def frontalness(keypoints: np.ndarray) -> float:
    eye_r, eye_l, nose = keypoints[EYE_R], keypoints[EYE_L], keypoints[NOSE]
    eye_line = eye_l - eye_r
    half_span = np.linalg.norm(eye_line) / 2.0
    if half_span < 1e-6:
        return 0.0
    # Distance of the nose from the eyes' midpoint, measured along the eye line (robust to head roll).
    offset = abs(float(np.dot(nose - (eye_r + eye_l) / 2.0, eye_line / (2.0 * half_span))))
    return float(np.clip(1.0 - offset / half_span, 0.0, 1.0))


def sharpness(crop_rgb: np.ndarray, reference: float) -> float:
    grey = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)
    variance = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return float(min(1.0, variance / reference))
