"""`facecue run` (and run_camera.py): the pipeline on a camera, video file, stream or GStreamer pipeline.

    python run_camera.py --source samples/face-demographics-walking-and-pause.mp4 --headless
    python run_camera.py --source 0 --model build/model.onnx --config configs/laptop.yaml
    python run_camera.py --source clip.mp4 --model m.onnx --mode fast --headless --jsonl out.jsonl --record out.mp4

Exit status: 0 after a clean end (end of file, --max-seconds, q/Esc in the window, Ctrl-C),
2 for bad input (config, model, source), 1 when the pipeline failed while running.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from runtime.backends.onnxruntime import BackendError
from runtime.capture import SourceError
from runtime.config import Config, ConfigError, load_config
from runtime.events import EventKind
from runtime.jsonl import RANDOM_WEIGHTS_WARNING, JsonlWriter
from runtime.metadata import ModelMetadataError
from runtime.overlay import FpsMeter, Status, VideoRecorder, Window, draw
from runtime.pipeline import Pipeline

log = logging.getLogger("facecue.run")
BAD_INPUT = (ConfigError, FileNotFoundError, ModelMetadataError, BackendError, SourceError)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=(
        "example: facecue run --source samples/face-demographics-walking-and-pause.mp4 --model build/model.onnx "
        "--config laptop --headless --jsonl run.jsonl"))
    parser.add_argument("--source", help="webcam index, video file, rtsp/http URL or GStreamer pipeline (source.uri)")
    parser.add_argument("--model", help="facecue ONNX model (classifier.model); without one, detection and tracking only")
    parser.add_argument("--config", help="YAML profile, e.g. configs/laptop.yaml (default: built-in defaults)")
    parser.add_argument("--mode", choices=("realtime", "fast"), help="realtime: newest frame, drops counted; fast: lossless")
    parser.add_argument("--headless", action="store_true", help="no window")
    parser.add_argument("--record", metavar="FILE", help="write the overlay video to FILE (.mp4 or .avi)")
    parser.add_argument("--jsonl", metavar="FILE", help="write events and per-frame tracks as JSON lines to FILE")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key (repeatable), e.g. --set policy.interval=0.5")
    parser.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    """The profile, then the named flags, then --set (the last word)."""
    flags = []
    if args.source is not None:
        flags.append(f"source.uri={_quoted(args.source)}")
    if args.model is not None:
        flags.append(f"classifier.model={_quoted(args.model)}")
    if args.mode is not None:
        flags.append(f"source.mode={args.mode}")
    if args.record is not None:
        flags.append(f"overlay.record={_quoted(args.record)}")
    if args.headless:
        flags.append("overlay.show=false")
    return load_config(args.config, flags + args.overrides)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"  # a YAML string whatever it contains


def has_display() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class FrameSinks:
    """What the main thread does with each FrameResult: overlay window, recording, JSON lines."""

    def __init__(self, pipeline: Pipeline, config: Config, jsonl: JsonlWriter | None = None):
        self.pipeline = pipeline
        self.jsonl = jsonl
        show = config.overlay.show
        if show and not has_display():
            log.warning("no display found: running headless (pass --headless to silence this)")
            show = False
        self.recorder = VideoRecorder(config.overlay.record, config.overlay.record_fps) if config.overlay.record else None
        self.window = Window(config.overlay.window_name) if show else None
        self.font_scale = config.overlay.font_scale
        self.fps = FpsMeter()
        self.frames = 0

    def __call__(self, result) -> bool:
        self.frames += 1
        fps = self.fps.tick()
        if self.jsonl is not None:
            self.jsonl.write_frame(result)
        if self.window is None and self.recorder is None:
            if self.frames % 100 == 0:
                log.info("%d frames, %.1f fps, %d tracks", self.frames, fps, len(result.tracks))
            return True
        status = Status(fps, (time.monotonic() - result.frame.timestamp) * 1000.0, self.pipeline.model_label,
                        self.pipeline.random_weights)
        image = draw(result, status, self.font_scale)
        if self.recorder is not None:
            self.recorder.write(image, result.frame.stream_time)
        return self.window.show(image) if self.window is not None else True

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.window is not None:
            self.window.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(args)
        pipeline = Pipeline(config)
    except BAD_INPUT as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:  # the output files: a missing folder or an unwritable format is bad input, named before the run
        sinks = FrameSinks(pipeline, config)
        jsonl = JsonlWriter(args.jsonl, pipeline.random_weights) if args.jsonl else None
    except OSError as error:
        pipeline.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    sinks.jsonl = jsonl
    if jsonl is not None:
        jsonl.write_run(config.source.uri, config.classifier.model, {"mode": config.source.mode})
        for kind in EventKind:
            pipeline.on(kind, jsonl.write_event)
    status = 0
    try:
        pipeline.run(sinks, max_seconds=args.max_seconds)
    except KeyboardInterrupt:
        log.info("interrupted: shutting down")
    except BAD_INPUT as error:
        print(f"error: {error}", file=sys.stderr)
        status = 2
    except Exception as error:
        print(f"error: the pipeline failed: {error}", file=sys.stderr)
        status = 1
    finally:
        pipeline.close()  # idempotent: every thread joined, pending events delivered
        sinks.close()
        stats = pipeline.stats()
        if jsonl is not None:
            jsonl.write_stats(stats.to_dict())
            jsonl.close()
        if stats.frames_read:
            warning = f"  [{RANDOM_WEIGHTS_WARNING}]" if pipeline.random_weights else ""
            print(f"model: {pipeline.model_label}{warning}")
            print(stats.format())
    return status


if __name__ == "__main__":
    sys.exit(main())
