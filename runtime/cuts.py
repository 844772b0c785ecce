"""Scene cuts: a cheap global change detector, so that no track id (and no attribute) crosses a cut.

Each frame is sampled at about 128 pixels wide (strided, no filtering) and turned into a hue × saturation
histogram (16 × 8 bins); the score is the Bhattacharyya distance (OpenCV's HISTCMP_BHATTACHARYYA, 0..1)
to the previous frame's histogram. Hue and saturation do not change when the light gets brighter or
dimmer, and a pan or people walking keep most of the frame's colours from one frame to the next, while
a cut to another shot replaces them. A frame scoring above `threshold` is a cut.

The threshold (runtime.config TrackerConfig.cut_threshold) was chosen on real clips, BENCHMARKS.md
"Cuts": the largest score without a cut (people walking, synthetic pans and lighting changes over real
photos) and the smallest score at a real cut (two different clips joined) are listed there.
"""
from __future__ import annotations

import cv2
import numpy as np

SAMPLE_WIDTH = 128
HUE_BINS, SATURATION_BINS = 16, 8


class CutDetector:
    def __init__(self, threshold: float):
        """`threshold` in (0, 1]: a frame whose score exceeds it is a cut; 0 or less turns detection off."""
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def score(self, rgb: np.ndarray) -> float:
        """Distance of this frame's colours from the previous frame's (0 for the first frame)."""
        step = max(1, rgb.shape[1] // SAMPLE_WIDTH)
        small = np.ascontiguousarray(rgb[::step, ::step])
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        histogram = cv2.calcHist([hsv], [0, 1], None, [HUE_BINS, SATURATION_BINS], [0, 180, 0, 256])
        previous, self._previous = self._previous, histogram
        if previous is None:
            return 0.0
        return float(cv2.compareHist(previous, histogram, cv2.HISTCMP_BHATTACHARYYA))

    def is_cut(self, rgb: np.ndarray) -> bool:
        score = self.score(rgb)
        return self.threshold > 0 and score > self.threshold
