"""Run statistics: per-stage latency, end-to-end latency, drops and throughput (design.md, "Performance").

Threads record samples into one `LatencyRecorder` (a lock and a bounded deque per stage, so a run of
hours keeps a fixed memory); `PipelineStats` is the snapshot the API returns and the CLI prints.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

STAGES = ("capture", "detect", "track", "crop", "infer", "smooth", "callbacks")
MAX_SAMPLES = 20_000  # per stage: the newest samples, for percentiles


@dataclass(frozen=True)
class LatencySummary:
    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float


class LatencyRecorder:
    def __init__(self, max_samples: int = MAX_SAMPLES):
        self._lock = threading.Lock()
        self._samples: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._max_samples = max_samples

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            samples = self._samples.setdefault(stage, deque(maxlen=self._max_samples))
            samples.append(seconds)
            self._counts[stage] = self._counts.get(stage, 0) + 1

    def summary(self, stage: str) -> LatencySummary | None:
        with self._lock:
            samples = np.array(self._samples.get(stage, ()), dtype=np.float64)
            count = self._counts.get(stage, 0)
        if samples.size == 0:
            return None
        p50, p95 = np.percentile(samples, [50, 95]) * 1000.0
        return LatencySummary(count, float(samples.mean() * 1000.0), float(p50), float(p95))


@dataclass(frozen=True)
class PipelineStats:
    duration_s: float
    frames_processed: int
    frames_read: int
    frames_dropped: int  # by the capture mailbox (real-time mode)
    source_reopens: int
    fps: float
    classifications: int
    classifications_per_s: float
    batches: int
    requests_deferred: int  # due crops not sent because the classifier was full
    events_delivered: int
    events_dropped: int
    callback_errors: int
    sink_frames_dropped: int = 0  # frames a sink could not keep up with (real-time mode; runtime.sinks)
    sink_events_dropped: int = 0  # attribute_changed events, likewise
    sink_errors: int = 0  # exceptions out of a sink's write/close
    stages: dict[str, LatencySummary] = field(default_factory=dict)
    end_to_end: LatencySummary | None = None  # frame capture → event delivered to callbacks
    frames_undecodable: int = 0  # failed reads of a file skipped before its end
    source_stalls: int = 0  # a live source read nothing for source.read_timeout (then reopened)
    detector_errors: int = 0  # detector exceptions, each retried
    classifier_errors: int = 0  # failed inferences, each retried
    backend: str = ""  # what ran the model and why (runtime.backends.describe), e.g. "openvino CPU bf16 (auto: ...)"
    inference_precision: str = ""  # the float layers' precision: bf16 logits differ from FP32 (BENCHMARKS.md)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [f"backend: {self.backend}; inference precision {self.inference_precision}"] if self.backend else []
        lines += [
            f"frames: {self.frames_processed} processed, {self.frames_read} read, {self.frames_dropped} dropped, "
            f"{self.source_reopens} source reopens; {self.fps:.1f} fps over {self.duration_s:.1f} s",
            f"classifications: {self.classifications} in {self.batches} batches "
            f"({self.classifications_per_s:.2f}/s), {self.requests_deferred} requests deferred",
            f"events: {self.events_delivered} delivered, {self.events_dropped} dropped, "
            f"{self.callback_errors} callback errors",
            f"faults: {self.frames_undecodable} undecodable frames, {self.source_stalls} source stalls, "
            f"{self.detector_errors} detector errors, {self.classifier_errors} classifier errors",
            f"sinks: {self.sink_frames_dropped} frames and {self.sink_events_dropped} events dropped, "
            f"{self.sink_errors} errors",
            f"{'stage':<12}{'count':>8}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}",
        ]
        rows = [(stage, self.stages.get(stage)) for stage in STAGES] + [("end-to-end", self.end_to_end)]
        for name, summary in rows:
            if summary is None:
                lines.append(f"{name:<12}{0:>8}{'-':>10}{'-':>10}{'-':>10}")
            else:
                lines.append(
                    f"{name:<12}{summary.count:>8}{summary.mean_ms:>10.2f}{summary.p50_ms:>10.2f}{summary.p95_ms:>10.2f}"
                )
        return "\n".join(lines)
