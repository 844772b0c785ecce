"""Face detection with MediaPipe's tasks `FaceDetector` (BlazeFace) and the models vendored in runtime/assets/.

The PyPI mediapipe wheel ships no model files, so the two BlazeFace models are vendored (see
runtime/assets/README.md). The full-range model is the default: the short-range one (trained for faces
within ~2 m of a selfie camera) misses people walking 1 to 5 m from a robot; BENCHMARKS.md has the counts.

MediaPipe returns boxes in integer pixels (possibly outside the image) and keypoints normalised to
[0, 1]; `detect` returns boxes clipped to the image and keypoints in pixels. In VIDEO mode MediaPipe
raises on a timestamp that does not increase, so the detector keeps its own strictly increasing
millisecond clock (also across a capture reopen, where frame timestamps may repeat).

Tiled detection (`tiles`, runtime/tiles.py has the geometry and the merge): the model sees its input at
192×192, so in a 1920×1080 frame a face must be ~140 px to be found. With tiles the same model also runs on
a grid of overlapping tiles and the results are merged by non-maximum suppression. The whole frame keeps
running in the configured mode; the tiles run on a second MediaPipe instance in IMAGE mode (tiles differ in
size by a pixel, need no timestamps, and the face detector keeps no state between frames); one instance per
tile in VIDEO mode measured no faster (BENCHMARKS.md, "Tiled face detection"). A call costs ~6.5 ms on this
2-core CPU whatever the image size (the 192×192 model dominates), so 2×2 (4 tiles + the whole frame) costs
about 5 passes on one thread; `tile_threads` runs the tiles on threads of their own (each with its own
MediaPipe instance: a graph is used by one thread at a time) while the calling thread runs the whole frame.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from runtime import tiles as tiling
from runtime.quiet import native_stderr_captured, native_stderr_filtered, native_stderr_silenced
from runtime.types import Detection

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
MODELS = {
    "full_range": ASSETS / "face_detection_full_range_sparse.tflite",
    "short_range": ASSETS / "face_detection_short_range.tflite",
}
RUNNING_MODES = {"video": vision.RunningMode.VIDEO, "image": vision.RunningMode.IMAGE}
# LiteRT prints "Input tensor memory is not aligned" once per process, at the first inference whose tensor is
# unaligned: the warm-up's on most machines, a later frame's on some (a CI machine's). So the first inferences
# also run with fd 2 held back (runtime/quiet.py), until that line has been seen.
QUIET_INFERENCES = 100
ALIGNMENT_LINE = "Input tensor memory is not aligned"


def resolve_model(model: str | Path) -> Path:
    """A model name ("full_range", "short_range") or a path to a .tflite file → an existing file."""
    path = MODELS.get(str(model), Path(model))
    if not path.is_file():
        raise FileNotFoundError(
            f"face detector model {model!r} not found: use one of {sorted(MODELS)} or a path to a .tflite file"
        )
    return path


class FaceDetector:
    """Detect faces in RGB images; one instance per thread (MediaPipe graphs are not shared)."""

    def __init__(
        self,
        model: str = "full_range",
        min_confidence: float = 0.5,
        min_face_size: int = 0,
        running_mode: str = "video",
        tiles: str = "off",
        tile_budget_ms: float = tiling.DEFAULT_BUDGET_MS,
        tile_threads: int = 0,
    ) -> None:
        """`tiles`: "off", "auto" or COLSxROWS ("2x2"); `tile_budget_ms`: the most a frame may take under "auto";
        `tile_threads`: threads that run the tiles while the calling thread runs the whole frame (0: it runs all)."""
        if running_mode not in RUNNING_MODES:
            raise ValueError(f"detector running_mode must be one of {sorted(RUNNING_MODES)}, got {running_mode!r}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"detector min_confidence must be in [0, 1], got {min_confidence}")
        self.tiles = tiling.parse_tiles(tiles)  # (cols, rows) or "auto"; ValueError names the value
        self.tile_budget_ms = tile_budget_ms
        if tile_threads < 0:
            raise ValueError(f"detector tile_threads must be >= 0, got {tile_threads}")
        self.tile_threads = tile_threads
        self.model_path = resolve_model(model)
        self.min_face_size = min_face_size
        self.running_mode = running_mode
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=RUNNING_MODES[running_mode],
            min_detection_confidence=min_confidence,
        )
        self._options = options
        self._quiet_left = QUIET_INFERENCES  # _create sets 0 once the alignment line has come
        self._detector = self._create(running_mode)
        self._tile_detectors: queue.SimpleQueue | None = None  # IMAGE mode, one per tile thread, made when first needed
        self._all_tile_detectors: list = []
        self._pool = ThreadPoolExecutor(tile_threads, thread_name_prefix="detector-tiles") if tile_threads else None
        self._last_ms = 0  # the warm-up inference's timestamp in VIDEO mode (_create)
        self._auto = tiling.AutoGrid(tile_budget_ms) if self.tiles == "auto" else None
        self._lock = threading.Lock()

    def _create(self, running_mode: str):
        """A MediaPipe detector, loaded and run once on a blank image while fd 2 is held back: LiteRT prints
        ~46 "Sparsity tensors" lines at every load of the full-range model, and glog's "Logging before
        InitGoogle" and "Input tensor memory is not aligned" at the first inference (runtime/quiet.py). The
        text goes into the error if loading fails, to the debug log otherwise (to stderr with --verbose)."""
        self._options.running_mode = RUNNING_MODES[running_mode]
        failure = None
        with native_stderr_captured("loading the face detector model") as native:
            try:
                detector = vision.FaceDetector.create_from_options(self._options)
                blank = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros((16, 16, 3), np.uint8))
                if running_mode == "video":
                    detector.detect_for_video(blank, 0)
                else:
                    detector.detect(blank)
                if ALIGNMENT_LINE in native.text:
                    self._quiet_left = 0
                return detector
            except (RuntimeError, ValueError) as error:
                failure = error
        raise ValueError(f"cannot load face detector model {self.model_path}: {failure}\n{native.text}") from failure

    @property
    def grid(self) -> tuple[int, int] | None:
        """The (cols, rows) in use; None while "auto" is still timing its first frames."""
        return self._auto.grid if self._auto is not None else self.tiles

    def detect(self, image_rgb: np.ndarray, timestamp: float | None = None) -> list[Detection]:
        """Faces in an H×W×3 uint8 RGB image; `timestamp` (seconds, the stream's clock) is used in VIDEO mode."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"detect expects an H×W×3 uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
        height, width = image_rgb.shape[:2]
        grid = self.tiles if self._auto is None else self._auto.grid_for(width, height)
        tiles = tiling.tile_boxes(width, height, *grid) if grid is not None and grid != (1, 1) else []
        pending = [self._pool.submit(self._detect_tile, image_rgb, tile) for tile in tiles] if self._pool else []
        started = time.perf_counter()
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image_rgb))
        if self.running_mode == "video":
            timestamp_ms = self._next_timestamp_ms(timestamp)
            result = self._quietly(lambda: self._detector.detect_for_video(image, timestamp_ms))
        else:
            result = self._quietly(lambda: self._detector.detect(image))
        detections = [_to_detection(found, width, height) for found in result.detections]
        if self._auto is not None and grid is None:  # still timing: this frame stays untiled
            self._auto.observe(width, height, time.perf_counter() - started)
        if tiles:
            found = [f.result() for f in pending] if pending else [self._detect_tile(image_rgb, t) for t in tiles]
            detections = tiling.merge(detections, *found)
        return [d for d in detections if _side(d) >= self.min_face_size]

    def _detect_tile(self, image_rgb: np.ndarray, tile: tuple[int, int, int, int]) -> list[Detection]:
        """Faces found inside one tile, in frame pixels, less those cut by an edge shared with another tile."""
        height, width = image_rgb.shape[:2]
        x1, y1, x2, y2 = tile
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image_rgb[y1:y2, x1:x2]))
        detector = self._take_tile_detector()
        try:
            results = self._quietly(lambda: detector.detect(image)).detections
        finally:
            self._tile_detectors.put(detector)
        found = [tiling.shift(_to_detection(r, x2 - x1, y2 - y1), x1, y1) for r in results]
        return [d for d in found if not tiling.cut_by_inner_edge(d.box, tile, width, height)]

    def _quietly(self, infer):
        """`infer()`, with fd 2 held back while LiteRT's one-time alignment line may still come (QUIET_INFERENCES);
        other lines written meanwhile are passed on."""
        if self._quiet_left <= 0:
            return infer()
        self._quiet_left -= 1  # tile threads may race here: at worst a few more inferences are held back
        with native_stderr_filtered("a first face detection") as native:
            result = infer()
        if ALIGNMENT_LINE in native.text:
            self._quiet_left = 0
        return result

    def _take_tile_detector(self):
        with self._lock:  # the first tiled frame makes them, once (a graph is never used by two threads at once)
            if self._tile_detectors is None:
                self._tile_detectors = queue.SimpleQueue()
                for _ in range(max(1, self.tile_threads)):
                    self._all_tile_detectors.append(self._create("image"))
                    self._tile_detectors.put(self._all_tile_detectors[-1])
        return self._tile_detectors.get()

    def _next_timestamp_ms(self, timestamp: float | None) -> int:
        wanted = int(round((time.monotonic() if timestamp is None else timestamp) * 1000.0))
        self._last_ms = max(wanted, self._last_ms + 1)
        return self._last_ms

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with native_stderr_silenced():  # LiteRT's "DestroyAccelerator" line per graph
            for detector in self._all_tile_detectors:
                detector.close()
            self._all_tile_detectors, self._tile_detectors = [], None
            if self._detector is not None:
                self._detector.close()
                self._detector = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _to_detection(found, width: int, height: int) -> Detection:
    box = found.bounding_box
    x1 = min(max(box.origin_x, 0), width)
    y1 = min(max(box.origin_y, 0), height)
    x2 = min(max(box.origin_x + box.width, 0), width)
    y2 = min(max(box.origin_y + box.height, 0), height)
    keypoints = np.array([[k.x * width, k.y * height] for k in found.keypoints], dtype=np.float32).reshape(-1, 2)
    score = found.categories[0].score if found.categories else 0.0
    return Detection(box=(float(x1), float(y1), float(x2), float(y2)), score=float(score), keypoints=keypoints)


def _side(detection: Detection) -> float:
    x1, y1, x2, y2 = detection.box
    return max(x2 - x1, y2 - y1)
