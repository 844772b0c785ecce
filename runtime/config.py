"""The pipeline configuration: typed dataclasses, one per YAML section (design.md, "Configuration").

Every key has a default, so an empty file is a valid configuration. Unknown keys and values of the
wrong type are errors that name the key (`classifier.max_batch: expected int, got 'x'`). Command-line
overrides (`--set section.key=value`) are parsed as YAML scalars, so `--set classifier.model=null`
and `--set policy.interval=0.5` mean what they say. The loading itself is runtime/configfile.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import configfile

DEFAULT_AGE_CENTROIDS = [1.5, 6.0, 15.0, 25.0, 35.0, 45.0, 55.0, 65.0, 77.0]


class ConfigError(ValueError):
    """A configuration file or override is malformed; the message names the key."""


@dataclass
class SourceConfig:
    uri: str = "0"  # webcam index, video file, rtsp:// or http(s):// URL, or a GStreamer pipeline (" ! ")
    mode: str = "realtime"  # "realtime": newest frame only, drops counted; "fast": lossless
    pace_files: bool = True  # in realtime mode, play files at their own frame rate (like a camera)
    loop: bool = False  # play a video file again from the start when it ends (demos, benchmarks)
    reopen_initial_delay: float = 0.5  # seconds before the first reopen of a failed live source
    reopen_max_delay: float = 8.0
    reopen_attempts: int | None = None  # None: keep trying


@dataclass
class DetectorConfig:
    model: str = "full_range"  # "full_range" (people 1-5 m away), "short_range" (< 2 m) or a .tflite path
    min_confidence: float = 0.5
    min_face_size: int = 0  # pixels; smaller faces are ignored


@dataclass
class TrackerConfig:
    confirm_hits: int = 3  # consecutive matches before a track is confirmed (and `appeared` fires)
    lost_after: float = 0.25  # seconds without a match before a track is lost
    remove_after: float = 1.0  # seconds without a match before a track is removed (`disappeared`)
    max_tracks: int = 32  # cap on live tracks; bounds the lifecycle events that are never dropped
    association: dict[str, float] = field(default_factory=dict)  # runtime.tracker.Association fields, e.g. min_iou


@dataclass
class ClassifierConfig:
    model: str | None = None  # path to a facecue .onnx (or a TensorRT .engine); None runs detection and tracking only
    backend: str = "onnxruntime"  # "onnxruntime" or "tensorrt" (a native engine, runtime/backends/tensorrt.py)
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    provider_options: dict[str, dict] = field(default_factory=dict)  # provider name → its ORT options
    intra_op_threads: int = 0  # 0: all cores but one, so perception keeps a core
    inter_op_threads: int = 1
    opencv_threads: int = 1  # cv2.setNumThreads for the whole process
    max_batch: int = 8
    batch_wait: float = 0.005  # seconds to wait for more crops after the first one of a batch
    queue_size: int = 8  # crop requests waiting for the classifier; more are deferred, never queued
    synchronous: bool = False  # perception waits for a frame's classifications before the next frame (offline scoring)
    drain_timeout: float = 10.0  # seconds to wait, at the end of a stream, for the crops still being classified
    perception_nice: int = 0  # Linux: niceness added to the perception thread, so a busy CPU favours the classifier
    # GPU (runtime/backends/providers.py, tensorrt.py); ignored on the CPU provider
    opt_batch: int = 1  # TensorRT profile: min 1, opt this (usual faces per round), max max_batch
    fp16: bool = True  # TensorRT EP may run an fp32 model in FP16 (an fp16 model is FP16 by its types)
    cache_dir: str = "~/.cache/facecue/tensorrt"  # TensorRT EP engine and timing caches
    cpu_fallback: bool = False  # a GPU provider that is missing or fails to load: run on CPU (logged) instead of failing


@dataclass
class PolicyConfig:
    interval: float = 1.0  # seconds before a classified track is classified again
    batch_fill: float = 0.5  # tracks classified longer ago than this × interval join a due track's batch (1.0: off)
    min_quality: float = 0.2  # crops below this wait for a better one (unless never classified) ...
    max_quality_wait: float = 4.0  # ... for at most this many seconds past due
    reference_side: float = 112.0  # face side in pixels that counts as full size; quality is measured on a crop this big
    sharpness_reference: float = 50.0  # variance of the Laplacian (on that crop) that counts as fully sharp


@dataclass
class SmoothingConfig:
    emotion_tau: float = 1.0  # seconds; time constant of the emotion EMA
    hysteresis_margin: float = 0.1  # a new label must beat the shown one by this probability
    hysteresis_time: float = 0.5  # seconds the new label must keep winning before it is shown
    age_centroids: list[float] = field(default_factory=lambda: list(DEFAULT_AGE_CENTROIDS))  # years per age group


@dataclass
class EventsConfig:
    min_observations: int = 3  # classifications per task before `attributes_ready`
    queue_size: int = 256  # attribute events waiting for callbacks; more are dropped and counted
    shutdown_timeout: float = 2.0  # seconds to deliver pending events at shutdown


@dataclass
class OverlayConfig:
    show: bool = True  # open a window (the CLI's --headless turns it off)
    window_name: str = "facecue"
    font_scale: float = 0.5
    record: str | None = None  # write the overlay video to this file (opt-in)
    record_fps: float | None = None  # None: the source's rate (a file's FPS, a live source's measured rate)


@dataclass
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)


# --- loading ---------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML profile — a file or a shipped profile name such as "laptop" (configfile.profile_path) — or
    the defaults when `path` is None, and apply `section.key=value` overrides."""
    return configfile.load(Config, path, overrides or [], error=ConfigError, validate=validate)


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def validate(config: Config, origin: str) -> None:
    """Value checks that types alone do not catch."""
    checks = [
        (config.source.mode in ("realtime", "fast"), "source.mode", "must be 'realtime' or 'fast'"),
        (0.0 <= config.detector.min_confidence <= 1.0, "detector.min_confidence", "must be in [0, 1]"),
        (config.tracker.confirm_hits >= 1, "tracker.confirm_hits", "must be >= 1"),
        (config.tracker.remove_after >= config.tracker.lost_after, "tracker.remove_after", "must be >= lost_after"),
        (config.tracker.max_tracks >= 1, "tracker.max_tracks", "must be >= 1"),
        (config.classifier.backend in ("onnxruntime", "tensorrt"), "classifier.backend", "must be 'onnxruntime' or 'tensorrt'"),
        (config.classifier.opt_batch >= 1, "classifier.opt_batch", "must be >= 1"),
        (config.classifier.max_batch >= 1, "classifier.max_batch", "must be >= 1"),
        (config.classifier.queue_size >= 1, "classifier.queue_size", "must be >= 1"),
        (config.classifier.intra_op_threads >= 0, "classifier.intra_op_threads", "must be >= 0"),
        (config.classifier.batch_wait >= 0, "classifier.batch_wait", "must be >= 0"),
        (config.classifier.drain_timeout >= 0, "classifier.drain_timeout", "must be >= 0"),
        (config.policy.interval > 0, "policy.interval", "must be > 0"),
        (0.0 <= config.policy.batch_fill <= 1.0, "policy.batch_fill", "must be in [0, 1]"),
        (config.policy.reference_side >= 8, "policy.reference_side", "must be >= 8 pixels"),
        (config.smoothing.emotion_tau > 0, "smoothing.emotion_tau", "must be > 0"),
        (config.smoothing.hysteresis_time >= 0, "smoothing.hysteresis_time", "must be >= 0"),
        (config.events.min_observations >= 1, "events.min_observations", "must be >= 1"),
        (config.events.queue_size >= 1, "events.queue_size", "must be >= 1"),
    ]
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"{origin}: {key} {message}")

