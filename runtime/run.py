"""`facecue run` (and run_camera.py): the pipeline on a camera, video file, stream or GStreamer pipeline.

    python run_camera.py --source samples/face-demographics-walking-and-pause.mp4 --headless
    python run_camera.py --source 0 --model build/model.onnx --config configs/laptop.yaml
    python run_camera.py --source clip.mp4 --model m.onnx --mode fast --headless --jsonl out.jsonl --record out.mp4

Exit status: 0 after a clean end (end of file, --max-seconds, q/Esc in the window, Ctrl-C, SIGTERM, SIGHUP),
2 for bad input (config, model, source), 1 when the pipeline failed while running, 128 + the signal's number
(130 for Ctrl-C, 143 for SIGTERM) when a signal came during start-up (imports, config, model loading), before
the output files were opened.

Signals: SIGINT (Ctrl-C), SIGTERM (systemd, `docker stop`, launch systems) and SIGHUP (the terminal closed)
all stop the run the same way: every open track gets `disappeared`, the lifecycle events still queued are
delivered, the JSONL gets its `stats` line and its final name, the recording is finalised, the statistics are
printed. A second signal skips the waits (slow callbacks, slow sinks, crops still being classified) and still
finalises the files. During start-up (imports, config, model loading) a signal ends the program at once,
without a traceback; a native call in progress (loading a model, opening a camera) finishes first.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

# the heavy imports (OpenCV, ONNX Runtime, MediaPipe) happen in main(), after the signal handlers are set

log = logging.getLogger("facecue.run")
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


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
    parser.add_argument("--ros2", action="store_true", help="publish REP-155 (ROS4HRI) face topics over DDS (ros2.enabled)")
    parser.add_argument("--mcap", metavar="FILE", help="record the same ROS 2 messages to an MCAP file (ros2.mcap)")
    parser.add_argument("--mcap-images", choices=("none", "frames", "overlay"),
                        help="also record frames or the overlay as JPEG in the MCAP (ros2.mcap_images)")
    parser.add_argument("--jsonl", metavar="FILE", help="write events and per-frame tracks as JSON lines to FILE")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key (repeatable), e.g. --set policy.interval=0.5")
    parser.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--verbose", action="store_true",
                        help="also show what MediaPipe, OpenCV and FFmpeg print while models load and sources open")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace):
    """The profile, then the named flags, then --set (the last word)."""
    from runtime.config import load_config

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
    if args.ros2:
        flags.append("ros2.enabled=true")
    if args.mcap is not None:
        flags.append(f"ros2.mcap={_quoted(args.mcap)}")
    if args.mcap_images is not None:
        flags.append(f"ros2.mcap_images={args.mcap_images}")
    return load_config(args.config, flags + args.overrides)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"  # a YAML string whatever it contains


def backend_fields(pipeline: Pipeline) -> dict:
    """For the JSONL run line: what runs the model, and in which precision (bf16 is not FP32's numbers)."""
    from runtime.backends import describe, inference_precision

    if pipeline.backend is None:
        return {}
    return {"backend": describe(pipeline.backend), "inference_precision": inference_precision(pipeline.backend)}


def has_display() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP → a clean stop (module docstring). Before `pipeline` is set: raise
    KeyboardInterrupt (start-up is simply abandoned); then: the first asks the pipeline to stop, the next
    forces it. The handler only sets flags once the pipeline runs, so it never breaks the shutdown it interrupts."""

    def __init__(self):
        self.received: list[int] = []
        self.pipeline = None
        self.unwinding = False  # start-up's KeyboardInterrupt has been caught: do not raise into its handler
        main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
        self._previous = {number: signal.signal(number, self._handle) for number in STOP_SIGNALS} if main_thread else {}

    def _handle(self, number: int, frame) -> None:
        self.received.append(number)
        if self.pipeline is None:
            if not self.unwinding:  # again if a library swallowed the first one
                raise KeyboardInterrupt
            return
        if len(self.received) == 1:
            self.pipeline.request_stop()
        else:
            self.pipeline.request_stop(force=True)
            log.warning("%s again: stopping now (queued events and frames are skipped; files are still finalised)",
                        signal.Signals(number).name)

    @property
    def exit_status(self) -> int:
        return 128 + self.received[0] if self.received else 130

    def restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)


def main(argv: list[str] | None = None) -> int:
    signals = StopSignals()
    try:
        return _main(argv, signals)
    except BaseException as error:  # noqa: BLE001
        # A signal during start-up raises KeyboardInterrupt, or, when it lands in a native module's import,
        # that module's ImportError ("initialization failed"): either way start-up was interrupted.
        if isinstance(error, SystemExit) or not signals.received or signals.pipeline is not None:
            raise
        signals.unwinding = True
        print("interrupted during start-up", file=sys.stderr)
        return signals.exit_status
    finally:
        signals.restore()


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """The errors that are bad input (one line, exit 2) for `facecue run` and `facecue bench`. Imported here,
    not at the top, so that a signal during these heavy imports is already handled (module docstring)."""
    from runtime.backends.onnxruntime import BackendError
    from runtime.capture import SourceError
    from runtime.config import ConfigError
    from runtime.metadata import ModelMetadataError
    from runtime.ros2 import Ros2Error

    return (ConfigError, FileNotFoundError, ModelMetadataError, BackendError, SourceError, Ros2Error)


def _main(argv: list[str] | None, signals: StopSignals) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    from runtime.quiet import set_verbose

    set_verbose(args.verbose)
    from runtime.backends.onnxruntime import BackendError
    from runtime.capture import SourceError
    from runtime.config import ConfigError
    from runtime.jsonl import RANDOM_WEIGHTS_WARNING, JsonlWriter
    from runtime.metadata import ModelMetadataError
    from runtime.overlay import FpsMeter, Status, VideoRecorder, draw
    from runtime.pipeline import Pipeline
    from runtime.ros2 import Ros2Error, open_sinks
    from runtime.sinks import OverlayRecorder

    bad_input = bad_input_errors()
    try:
        config = build_config(args)
        pipeline = Pipeline(config)
    except bad_input as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if signals.received:  # a signal during start-up that a library swallowed: still a stop, before anything is written
        pipeline.close()
        print("interrupted during start-up", file=sys.stderr)
        return signals.exit_status
    signals.pipeline = pipeline  # from here on a signal stops the run (once it has started) and finalises the files
    show = config.overlay.show
    if show and not has_display():
        log.warning("no display found: running headless (pass --headless to silence this)")
        show = False
    try:  # the output files: a missing folder or an unwritable format is bad input, named before the run
        recorder = VideoRecorder(config.overlay.record, config.overlay.record_fps) if config.overlay.record else None
        jsonl = JsonlWriter(args.jsonl, pipeline.random_weights) if args.jsonl else None
        render = lambda result: draw(result, Status(0.0, None, pipeline.model_label, pipeline.random_weights),  # noqa: E731
                                     config.overlay.font_scale)
        ros2_sinks = open_sinks(config, render)  # ROS 2 topics over DDS and/or MCAP, when asked (runtime/ros2)
    except (OSError, Ros2Error) as error:
        pipeline.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    if jsonl is not None:
        jsonl.write_run(config.source.uri, config.classifier.model, {"mode": config.source.mode} | backend_fields(pipeline))
        pipeline.add_sink(jsonl)
    if recorder is not None:
        pipeline.add_sink(OverlayRecorder(recorder, pipeline.model_label, pipeline.random_weights,
                                          config.overlay.font_scale))
    for sink in ros2_sinks:
        pipeline.add_sink(sink)
    display = Display(pipeline, config, show, FpsMeter())
    status = 0
    try:
        pipeline.run(display, max_seconds=args.max_seconds)
    except KeyboardInterrupt:  # a callback's or a library's, not our signals'
        log.info("interrupted: shutting down")
    except bad_input as error:
        print(f"error: {error}", file=sys.stderr)
        status = 2
    except Exception as error:
        print(f"error: the pipeline failed: {error}", file=sys.stderr)
        status = 1
    finally:
        pipeline.close()  # idempotent: every thread joined, pending events delivered, sinks closed
        display.close()
    if signals.received:
        log.info("interrupted (%s): shut down cleanly", signal.Signals(signals.received[0]).name)
    stats = pipeline.stats()
    if stats.frames_read:
        warning = f"  [{RANDOM_WEIGHTS_WARNING}]" if pipeline.random_weights else ""
        out = sys.stderr if jsonl is not None and jsonl.to_stdout else sys.stdout  # stdout carries the JSON lines
        print(f"model: {pipeline.model_label}{warning}", file=out)
        print(stats.format(), file=out)
    return status


class Display:
    """What the main thread does with each FrameResult it takes (the newest one in real-time mode): the
    overlay window, or a progress line when headless. Files are written by the pipeline's sinks."""

    def __init__(self, pipeline, config, show: bool, fps):
        from runtime.overlay import Status, Window, draw

        self.status, self.draw = Status, draw
        self.pipeline = pipeline
        self.window = Window(config.overlay.window_name) if show else None
        self.font_scale = config.overlay.font_scale
        self.fps = fps
        self.frames = 0

    def __call__(self, result) -> bool:
        self.frames += 1
        fps = self.fps.tick()
        if self.window is None:
            if self.frames % 100 == 0:
                log.info("%d frames, %.1f fps, %d tracks", self.frames, fps, len(result.tracks))
            return True
        status = self.status(fps, (time.monotonic() - result.frame.timestamp) * 1000.0, self.pipeline.model_label,
                             self.pipeline.random_weights)
        return self.window.show(self.draw(result, status, self.font_scale))

    def close(self) -> None:
        if self.window is not None:
            self.window.close()


if __name__ == "__main__":
    sys.exit(main())
