"""Tiled face detection: the grid of overlapping tiles, the merge of their faces, and the `auto` choice.

runtime/detector.py runs the model on the whole frame and on each tile; this module holds the pure parts.

- Tiles overlap by `OVERLAP` (a quarter of a tile's side), so a face up to that size that one tile cuts lies
  whole inside its neighbour; a tile's face touching an edge shared with another tile is therefore dropped
  (its whole copy comes from the neighbour, a larger face from the whole-frame pass).
- The merge is greedy non-maximum suppression on score at IoU `NMS_IOU`; the kept box keeps its own score
  and keypoints. Hand-written (15 lines) rather than cv2.dnn.NMSBoxes so the keypoints stay with their box
  without an index round-trip and the tests read the rule.
- `auto`: the full-range model finds faces down to about 14 px at its 192-px input (37-px faces in 500-px
  photos: 42 of 43, BENCHMARKS.md), so a frame whose long side is at most `AUTO_TILE_SIDE` (640 px: faces of
  ~47 px and more) is not tiled; a larger one gets the smallest n×n grid whose tiles are at most that side,
  up to 3×3, and smaller while (1 + n²) measured passes exceed the time budget. The pass is timed on the
  detector's first frames (`AutoGrid`), since it depends on the CPU (~6.5 ms here, any image size). The default
  budget, 50 ms, leaves a 15 fps camera a quarter of its frame time for tracking and crops.
"""
from __future__ import annotations

import logging
import re

import numpy as np

from runtime.types import Box, Detection

log = logging.getLogger(__name__)

OVERLAP = 0.25  # of a tile's side
NMS_IOU = 0.3
AUTO_TILE_SIDE = 640  # pixels: tiles (and untiled frames) up to this long side find faces of ~47 px and more
AUTO_MAX_GRID = 3
DEFAULT_BUDGET_MS = 50.0  # per frame under `auto`: 2×2 while a pass takes ≤ 10 ms (6.5-9 here), 3×3 at ≤ 5 ms
PROBE_FRAMES = 10  # frames timed before `auto` decides; the fastest counts (the first loads the model, capture competes)
EDGE = 1.0  # pixels: a box this close to an edge between tiles is cut by it
_GRID = re.compile(r"^\s*([1-9])\s*x\s*([1-9])\s*$")


def parse_tiles(value: str) -> tuple[int, int] | str:
    """"off" → (1, 1), "auto" → "auto", "COLSxROWS" ("2x2", "3x2"; 1 to 9 each) → (cols, rows)."""
    text = str(value).strip().lower()
    if text == "off":
        return (1, 1)
    if text == "auto":
        return "auto"
    match = _GRID.match(text)
    if not match:
        raise ValueError(f"detector tiles must be 'off', 'auto' or COLSxROWS such as '2x2' (1 to 9 each), got {value!r}")
    return int(match.group(1)), int(match.group(2))


def tile_boxes(width: int, height: int, cols: int, rows: int, overlap: float = OVERLAP) -> list[tuple[int, int, int, int]]:
    """Integer (x1, y1, x2, y2) tiles covering the image, `overlap` of a tile's side shared with each neighbour."""
    def spans(length: int, count: int) -> list[tuple[int, int]]:
        side = length / (count - (count - 1) * overlap)
        step = side * (1.0 - overlap)
        return [(int(round(i * step)), length if i == count - 1 else int(round(i * step + side))) for i in range(count)]

    return [(x1, y1, x2, y2) for y1, y2 in spans(height, rows) for x1, x2 in spans(width, cols)]


def shift(detection: Detection, dx: float, dy: float) -> Detection:
    x1, y1, x2, y2 = detection.box
    return Detection(box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy), score=detection.score,
                     keypoints=detection.keypoints + np.array([dx, dy], dtype=np.float32))


def cut_by_inner_edge(box: Box, tile: tuple[int, int, int, int], width: int, height: int) -> bool:
    """The box reaches an edge of the tile that is not the image's border (so the face may be cut there)."""
    x1, y1, x2, y2 = box
    tx1, ty1, tx2, ty2 = tile
    return ((tx1 > 0 and x1 <= tx1 + EDGE) or (ty1 > 0 and y1 <= ty1 + EDGE)
            or (tx2 < width and x2 >= tx2 - EDGE) or (ty2 < height and y2 >= ty2 - EDGE))


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def merge(*groups: list[Detection], threshold: float = NMS_IOU) -> list[Detection]:
    """Greedy NMS over all groups: the highest score first, dropping boxes that overlap a kept one."""
    kept: list[Detection] = []
    for candidate in sorted((d for group in groups for d in group), key=lambda d: -d.score):
        if all(iou(candidate.box, k.box) < threshold for k in kept):
            kept.append(candidate)
    return kept


def auto_grid(width: int, height: int, pass_ms: float, budget_ms: float = DEFAULT_BUDGET_MS) -> tuple[int, int]:
    """The n×n grid `auto` uses for a frame, given one detector pass's time (see the module docstring)."""
    long_side = max(width, height)
    n = 1
    while n < AUTO_MAX_GRID and long_side / (n - (n - 1) * OVERLAP) > AUTO_TILE_SIDE:
        n += 1
    while n > 1 and (1 + n * n) * pass_ms > budget_ms:
        n -= 1
    return (n, n)


class AutoGrid:
    """Times the whole-frame pass on the first `PROBE_FRAMES` frames of a size, then fixes the grid."""

    def __init__(self, budget_ms: float = DEFAULT_BUDGET_MS):
        self.budget_ms = budget_ms
        self.grid: tuple[int, int] | None = None
        self._size: tuple[int, int] | None = None
        self._times: list[float] = []

    def grid_for(self, width: int, height: int) -> tuple[int, int] | None:
        """The grid decided for frames of this size; None: not decided yet (time this frame's pass)."""
        return self.grid if (width, height) == self._size else None

    def observe(self, width: int, height: int, seconds: float) -> tuple[int, int] | None:
        """This frame's whole-pass time → the grid to use (None: still timing, untiled)."""
        if (width, height) != self._size:  # a new source or resolution: decide again
            self._size, self._times, self.grid = (width, height), [], None
        if self.grid is None:
            self._times.append(1000.0 * seconds)
            if len(self._times) >= PROBE_FRAMES:
                pass_ms = min(self._times)
                self.grid = auto_grid(width, height, pass_ms, self.budget_ms)
                log.info("detector tiles auto: %dx%d for %dx%d frames (%.1f ms a pass, budget %.0f ms)",
                         *self.grid, width, height, pass_ms, self.budget_ms)
        return self.grid
