"""INT8 against FP32 on the same held-out crops: per-task agreement, and speed side by side."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from calibration.metrics import softmax
from facecue.progress import Progress


@dataclass
class TaskAgreement:
    task: str
    top1_agreement: float  # over decisive samples
    decisive: int  # samples whose FP32 top-2 margin exceeds tolerance × logit scale
    samples: int
    max_prob_diff: float  # max |p_int8 − p_fp32| over samples and classes (temperature 1)


@dataclass
class Speed:
    batch: int
    fp32_crops_per_s: float
    int8_crops_per_s: float

    @property
    def ratio(self) -> float:  # > 1: INT8 is faster
        return self.int8_crops_per_s / self.fp32_crops_per_s


def run_batches(session: ort.InferenceSession, input_name: str, crops: np.ndarray, batch: int = 16,
                bar: Progress | None = None) -> dict[str, np.ndarray]:
    """The logits per output, batch by batch, counted on `bar` when given."""
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(crops), batch):
        for name, value in zip(names, session.run(names, {input_name: crops[start:start + batch]})):
            parts[name].append(value)
        if bar is not None:
            bar.update(len(crops[start:start + batch]))
    return {name: np.concatenate(values) for name, values in parts.items()}


def agreement(task: str, int8: np.ndarray, fp32: np.ndarray, tolerance: float) -> TaskAgreement:
    top2 = np.sort(fp32, axis=1)[:, -2:]
    scale = max(1.0, float(np.abs(fp32).max()))
    decisive = (top2[:, 1] - top2[:, 0]) > tolerance * scale
    same = int8.argmax(1) == fp32.argmax(1)
    return TaskAgreement(task, float(same[decisive].mean()) if decisive.any() else 1.0, int(decisive.sum()), len(fp32),
                         float(np.abs(softmax(int8) - softmax(fp32)).max()))


def measure_speed(fp32: ort.InferenceSession, int8: ort.InferenceSession, input_name: str, crops: np.ndarray,
                  batch: int, repeats: int, bar: Progress | None = None) -> Speed:
    """Median crops/s of each model; runs alternate between the two so machine noise hits both alike."""
    images = np.ascontiguousarray(np.resize(crops, (batch, *crops.shape[1:])))
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for session in (fp32, int8):  # warm-up: first runs allocate and pick kernels
        session.run(None, {input_name: images})
    for _ in range(repeats):
        for name, session in (("fp32", fp32), ("int8", int8)):
            start = time.perf_counter()
            session.run(None, {input_name: images})
            times[name].append(time.perf_counter() - start)
        if bar is not None:
            bar.update()
    return Speed(batch, batch / float(np.median(times["fp32"])), batch / float(np.median(times["int8"])))
