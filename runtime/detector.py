"""Face detection with MediaPipe's tasks `FaceDetector` (BlazeFace) and the models vendored in runtime/assets/.

The PyPI mediapipe wheel ships no model files, so the two BlazeFace models are vendored (see
runtime/assets/README.md). The full-range model is the default: the short-range one (trained for faces
within ~2 m of a selfie camera) misses people walking 1 to 5 m from a robot; BENCHMARKS.md has the counts.

MediaPipe returns boxes in integer pixels (possibly outside the image) and keypoints normalised to
[0, 1]; `detect` returns boxes clipped to the image and keypoints in pixels. In VIDEO mode MediaPipe
raises on a timestamp that does not increase, so the detector keeps its own strictly increasing
millisecond clock (also across a capture reopen, where frame timestamps may repeat).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import types
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from runtime.types import Detection

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
MODELS = {
    "full_range": ASSETS / "face_detection_full_range_sparse.tflite",
    "short_range": ASSETS / "face_detection_short_range.tflite",
}
RUNNING_MODES = {"video": vision.RunningMode.VIDEO, "image": vision.RunningMode.IMAGE}


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
    ) -> None:
        if running_mode not in RUNNING_MODES:
            raise ValueError(f"detector running_mode must be one of {sorted(RUNNING_MODES)}, got {running_mode!r}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"detector min_confidence must be in [0, 1], got {min_confidence}")
        self.model_path = resolve_model(model)
        self.min_face_size = min_face_size
        self.running_mode = running_mode
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=RUNNING_MODES[running_mode],
            min_detection_confidence=min_confidence,
        )
        failure = None
        with _native_stderr_captured() as native:
            try:
                self._detector = vision.FaceDetector.create_from_options(options)
            except (RuntimeError, ValueError) as error:
                failure = error
        if failure is not None:
            raise ValueError(f"cannot load face detector model {self.model_path}: {failure}\n{native.text}") from failure
        self._last_ms = -1

    def detect(self, image_rgb: np.ndarray, timestamp: float | None = None) -> list[Detection]:
        """Faces in an H×W×3 uint8 RGB image; `timestamp` (seconds, the stream's clock) is used in VIDEO mode."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"detect expects an H×W×3 uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image_rgb))
        if self.running_mode == "video":
            result = self._detector.detect_for_video(image, self._next_timestamp_ms(timestamp))
        else:
            result = self._detector.detect(image)
        height, width = image_rgb.shape[:2]
        detections = [_to_detection(found, width, height) for found in result.detections]
        return [d for d in detections if _side(d) >= self.min_face_size]

    def _next_timestamp_ms(self, timestamp: float | None) -> int:
        wanted = int(round((time.monotonic() if timestamp is None else timestamp) * 1000.0))
        self._last_ms = max(wanted, self._last_ms + 1)
        return self._last_ms

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def _native_stderr_captured():
    """Hold back what MediaPipe's C++ side writes to stderr while a model loads.

    The full-range model makes LiteRT print ~46 identical "Sparsity tensors may not yet be fully supported"
    lines at every load, which buries the pipeline's own messages. The text is kept: the caller puts it into
    the error if loading fails, and it goes to the debug log otherwise. Only the few milliseconds of the load
    are affected.
    """
    captured = types.SimpleNamespace(text="")  # filled when the block ends
    with tempfile.TemporaryFile(mode="w+b") as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            captured.text = held.read().decode("utf-8", "replace")
            if captured.text:
                log.debug("MediaPipe while loading the detector model:\n%s", captured.text)


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
