"""The pipeline configuration: typed dataclasses, one per YAML section (design.md, "Configuration").

Every key has a default, so an empty file is a valid configuration. Unknown keys and values of the
wrong type are errors that name the key (`classifier.max_batch: expected int, got 'x'`). Command-line
overrides (`--set section.key=value`) are parsed as YAML scalars, so `--set classifier.model=null`
and `--set policy.interval=0.5` mean what they say. The loading itself is runtime/configfile.py.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import configfile
from runtime.tiles import parse_tiles

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("auto", "f32", "bf16", "f16")  # OpenVINO's INFERENCE_PRECISION_HINT values
OPENVINO_DEVICES = ("CPU", "GPU", "NPU", "AUTO")
DEFAULT_AGE_CENTROIDS = [1.5, 6.0, 15.0, 25.0, 35.0, 45.0, 55.0, 65.0, 77.0]


class ConfigError(ValueError):
    """A configuration file or override is malformed; the message names the key."""


@dataclass
class SourceConfig:
    uri: str = "0"  # webcam index, video file, rtsp:// or http(s):// URL, or a GStreamer pipeline (" ! ")
    mode: str = "realtime"  # "realtime": newest frame only, drops counted; "fast": lossless
    pace_files: bool = True  # in realtime mode, play files at their own frame rate (like a camera)
    loop: bool = False  # play a video file again from the start when it ends (demos, benchmarks)
    reopen_initial_delay: float = 0.5  # seconds (>= 0) before the first reopen of a failed live source
    reopen_max_delay: float = 8.0  # seconds (>= 0)
    reopen_attempts: int | None = None  # >= 0; None: keep trying
    read_timeout: float = 5.0  # seconds (> 0) without a frame before a live source is stalled and reopened


@dataclass
class DetectorConfig:
    model: str = "full_range"  # "full_range" (people 1-5 m away), "short_range" (< 2 m) or a .tflite path
    min_confidence: float = 0.5  # in [0, 1]
    min_face_size: int = 0  # pixels (>= 0); smaller faces are ignored
    max_consecutive_errors: int = 5  # >= 1; detector exceptions in a row (retried with backoff) that stop the run
    tiles: str = "off"  # "off", "auto" or COLSxROWS ("2x2"): also detect on overlapping tiles (runtime/tiles.py)
    tile_budget_ms: float = 50.0  # > 0; "auto": the most a frame's detection may take (measured passes × tiles)
    tile_threads: int = 0  # >= 0; threads running the tiles beside the whole-frame pass (0: perception's thread runs all)


@dataclass
class TrackerConfig:
    confirm_hits: int = 3  # >= 1; consecutive matches before a track is confirmed (and `appeared` fires)
    lost_after: float = 0.25  # seconds (> 0, <= remove_after) without a match before a track is reported lost
    # seconds (> 0) without a match before a track is removed (`disappeared`); a face passing behind another is
    # hidden 1-2 s (BENCHMARKS.md "Tracking"), so 2 s keeps its id; 0.5 .. 5 is sensible
    remove_after: float = 2.0
    max_tracks: int = 32  # >= 1; cap on live tracks; bounds the lifecycle events that are never dropped
    association: dict[str, float] = field(default_factory=dict)  # runtime.tracker.Association fields, e.g. min_iou
    appearance: bool = True  # colour descriptors of face and hair in the association (runtime/appearance.py)
    # runtime/cuts.py: a frame whose colours differ from the previous one's by more than this (0..1) is a cut
    # and ends every track (`disappeared`, reason "cut"); 0 turns it off. Chosen in BENCHMARKS.md "Cuts".
    cut_threshold: float = 0.21
    report_tentative: bool = False  # also hand tentative tracks to FrameResult consumers (overlay, JSONL frames)


@dataclass
class ClassifierConfig:
    model: str | None = None  # path to a facecue .onnx (or a TensorRT .engine); None runs detection and tracking only
    backend: str = "auto"  # auto | onnxruntime | openvino | tensorrt (runtime/backends/auto.py says how auto picks)
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    provider_options: dict[str, dict] = field(default_factory=dict)  # provider name → its ORT options
    intra_op_threads: int = 0  # >= 0; 0: every core this process may use (perception needs a fraction of one)
    inter_op_threads: int = 1  # >= 0 (0: ONNX Runtime's default)
    opencv_threads: int = 1  # >= 0; cv2.setNumThreads for the whole process
    max_batch: int = 8  # >= 1
    batch_wait: float = 0.005  # seconds (>= 0) to wait for more crops after the first one of a batch
    queue_size: int = 8  # >= 1; crop requests waiting for the classifier; more are deferred, never queued
    synchronous: bool = False  # perception waits for a frame's classifications before the next frame (offline scoring)
    drain_timeout: float = 10.0  # seconds (>= 0) to wait, at the end of a stream, for the crops still being classified
    perception_nice: int = 0  # in [0, 19]; Linux: niceness added to the perception thread, so a busy CPU favours the classifier
    max_consecutive_errors: int = 5  # >= 1; failed inferences in a row (each retried with backoff) that stop the run
    # GPU (runtime/backends/providers.py, tensorrt.py); ignored on the CPU provider
    opt_batch: int = 1  # >= 1; TensorRT profile: min 1, opt this (usual faces per round), max max_batch
    fp16: bool = True  # TensorRT EP may run an fp32 model in FP16 (an fp16 model is FP16 by its types)
    cache_dir: str = "~/.cache/facecue/tensorrt"  # TensorRT EP engine and timing caches
    cpu_fallback: bool = False  # a GPU provider that is missing or fails to load: run on CPU (logged) instead of failing
    # OpenVINO (runtime/backends/openvino.py)
    precision: str = "auto"  # OpenVINO inference precision: auto (bf16 where the CPU has it, else f32) | f32 | bf16 | f16
    openvino_device: str = "CPU"  # CPU | GPU | NPU | AUTO (only CPU is tested)
    openvino_cache_dir: str = "~/.cache/facecue/openvino"  # compiled models, so the second start is fast; "" = off
    # more OpenVINO properties, e.g. {ENABLE_CPU_PINNING: YES} (names: OpenVINO's device documentation);
    # applied last, so they also replace the backend's own (runtime/backends/openvino.py says which)
    openvino_properties: dict = field(default_factory=dict)


@dataclass
class PolicyConfig:
    interval: float = 1.0  # seconds (> 0) before a classified track is classified again
    batch_fill: float = 0.5  # in [0, 1]; tracks classified longer ago than this × interval join a due track's batch (1.0: off)
    min_quality: float = 0.2  # in [0, 1]; crops below this wait for a better one (unless never classified) ...
    max_quality_wait: float = 4.0  # ... for at most this many seconds (>= 0) past due
    reference_side: float = 112.0  # >= 8; face side in pixels that counts as full size; quality is measured on a crop this big
    sharpness_reference: float = 50.0  # > 0; variance of the Laplacian (on that crop) that counts as fully sharp


@dataclass
class SmoothingConfig:
    emotion_tau: float = 1.0  # seconds (> 0); time constant of the emotion EMA
    hysteresis_margin: float = 0.1  # in [0, 1]; a new label must beat the shown one by this probability
    hysteresis_time: float = 0.5  # seconds (>= 0) the new label must keep winning before it is shown
    age_centroids: list[float] = field(default_factory=lambda: list(DEFAULT_AGE_CENTROIDS))  # years (>= 0) per age group


@dataclass
class EventsConfig:
    min_observations: int = 3  # >= 1; classifications per task before `attributes_ready`
    queue_size: int = 256  # >= 1; attribute events waiting for callbacks; more are dropped and counted
    shutdown_timeout: float = 2.0  # seconds (>= 0) for pending attribute_changed at shutdown; lifecycle events: all


@dataclass
class OverlayConfig:
    show: bool = True  # open a window (the CLI's --headless turns it off)
    window_name: str = "facecue"
    font_scale: float = 0.5  # > 0
    record: str | None = None  # write the overlay video to this file (opt-in)
    record_fps: float | None = None  # > 0; None: the source's rate (a file's FPS, a live source's measured rate)


@dataclass
class Ros2Config:
    """REP-155 (ROS4HRI) output, runtime/rep155.py: live DDS topics (runtime/ros2/dds.py) and MCAP (mcap_sink.py)."""

    enabled: bool = False  # publish over DDS (also --ros2); nothing is sent unless asked
    frame_id: str = "camera"  # header.frame_id of every message
    domain_id: int | None = None  # DDS domain; None: $ROS_DOMAIN_ID, else 0
    mcap: str | None = None  # record the same messages to this .mcap file (also --mcap)
    mcap_images: str = "none"  # "none", "frames" or "overlay": also record images as JPEG CompressedImage
    jpeg_quality: int = 80


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
    ros2: Ros2Config = field(default_factory=Ros2Config)


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
        (_tiles_ok(config.detector.tiles), "detector.tiles", f"must be off, auto or COLSxROWS such as 2x2 (1 to 9 each), "
                                                              f"got {config.detector.tiles!r}"),
        (config.detector.tile_budget_ms > 0, "detector.tile_budget_ms", "must be > 0"),
        (config.detector.tile_threads >= 0, "detector.tile_threads", "must be >= 0"),
        (config.tracker.confirm_hits >= 1, "tracker.confirm_hits", "must be >= 1"),
        (config.tracker.remove_after >= config.tracker.lost_after, "tracker.remove_after", "must be >= lost_after"),
        (config.tracker.max_tracks >= 1, "tracker.max_tracks", "must be >= 1"),
        (0.0 <= config.tracker.cut_threshold <= 1.0, "tracker.cut_threshold", "must be in [0, 1] (0: off)"),
        (config.classifier.backend in BACKENDS, "classifier.backend", f"must be one of {', '.join(BACKENDS)}"),
        (config.classifier.precision in PRECISIONS, "classifier.precision", f"must be one of {', '.join(PRECISIONS)}"),
        (config.classifier.openvino_device in OPENVINO_DEVICES, "classifier.openvino_device",
         f"must be one of {', '.join(OPENVINO_DEVICES)}"),
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
        (config.ros2.mcap_images in ("none", "frames", "overlay"), "ros2.mcap_images", "must be 'none', 'frames' or 'overlay'"),
        (config.ros2.domain_id is None or 0 <= config.ros2.domain_id <= 232, "ros2.domain_id", "must be in [0, 232]"),
        (1 <= config.ros2.jpeg_quality <= 100, "ros2.jpeg_quality", "must be in [1, 100]"),
    ]
    checks += _range_checks(config)
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"{origin}: {key} {message}")


def _range_checks(config: Config) -> list[tuple[bool, str, str]]:
    """The documented range of every numeric key (comments above); NaN and infinity are out of every range."""
    source, detector, tracker, classifier = config.source, config.detector, config.tracker, config.classifier
    policy, smoothing, events, overlay = config.policy, config.smoothing, config.events, config.overlay
    at_least_0 = [("source.reopen_initial_delay", source.reopen_initial_delay),
                  ("source.reopen_max_delay", source.reopen_max_delay),
                  ("detector.min_face_size", detector.min_face_size),
                  ("classifier.inter_op_threads", classifier.inter_op_threads),
                  ("classifier.opencv_threads", classifier.opencv_threads),
                  ("policy.max_quality_wait", policy.max_quality_wait),
                  ("events.shutdown_timeout", events.shutdown_timeout)]
    positive = [("source.read_timeout", source.read_timeout), ("tracker.lost_after", tracker.lost_after),
                ("tracker.remove_after", tracker.remove_after),
                ("policy.sharpness_reference", policy.sharpness_reference),
                ("overlay.font_scale", overlay.font_scale)]
    at_least_1 = [("detector.max_consecutive_errors", detector.max_consecutive_errors),
                  ("classifier.max_consecutive_errors", classifier.max_consecutive_errors)]
    unit = [("policy.min_quality", policy.min_quality), ("smoothing.hysteresis_margin", smoothing.hysteresis_margin)]
    checks = [(_finite(v) and v >= 0, key, "must be >= 0") for key, v in at_least_0]
    checks += [(_finite(v) and v > 0, key, "must be > 0") for key, v in positive]
    checks += [(v >= 1, key, "must be >= 1") for key, v in at_least_1]
    checks += [(_finite(v) and 0 <= v <= 1, key, "must be in [0, 1]") for key, v in unit]
    finite = [("detector.min_confidence", detector.min_confidence), ("classifier.batch_wait", classifier.batch_wait),
              ("classifier.drain_timeout", classifier.drain_timeout), ("policy.interval", policy.interval),
              ("policy.batch_fill", policy.batch_fill), ("policy.reference_side", policy.reference_side),
              ("smoothing.emotion_tau", smoothing.emotion_tau), ("smoothing.hysteresis_time", smoothing.hysteresis_time)]
    checks += [(_finite(v), key, "must be a finite number") for key, v in finite]  # their ranges are checked above
    checks += [
        (source.reopen_attempts is None or source.reopen_attempts >= 0, "source.reopen_attempts", "must be >= 0 or null"),
        (tracker.lost_after <= tracker.remove_after, "tracker.lost_after", "must be <= tracker.remove_after"),
        (overlay.record_fps is None or (_finite(overlay.record_fps) and overlay.record_fps > 0), "overlay.record_fps",
         "must be > 0 or null (the source's rate)"),
        (0 <= classifier.perception_nice <= 19, "classifier.perception_nice", "must be in [0, 19]"),
        (all(_finite(v) and v >= 0 for v in smoothing.age_centroids), "smoothing.age_centroids", "must be years >= 0"),
    ]
    return checks


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _tiles_ok(value: str) -> bool:
    try:
        parse_tiles(value)
    except ValueError:
        return False
    return True
