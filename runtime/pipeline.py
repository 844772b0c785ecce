"""The live pipeline: capture → detect → track → classify → smooth → events (design.md, "Runtime stages").

Threads: capture (runtime.capture), perception (runtime.perception, fed by the loop here), classifier
(runtime.classifier), events (runtime.events); the caller's thread polls `results()` for the overlay, or
calls `run()`. The perception thread takes each frame from capture, turns it into a FrameResult (and
FaceEvents) and publishes it to the caller (real-time mode: newest wins, for a display; fast mode: lossless)
and to the sinks (runtime.sinks: every frame and event, on their own thread; JSONL, recording, ...).
Without a model, there is no classifier thread: detection, tracking and the overlay still run. Tracking runs
on the stream's clock (`Frame.stream_time`), so a file scored in fast mode gives the same tracks however fast the machine or the
caller is; with `classifier.synchronous` the same attributes and events too. At the normal end of a stream
the crops still being classified are folded in (up to `classifier.drain_timeout`) before the last
`disappeared`; stop() skips that wait. Latencies use the monotonic capture time. While a live source sends
nothing (outage, stall), the loop ticks perception on the monotonic clock, so tracks still get `disappeared`
within `tracker.remove_after` (+ one poll) of their last sighting; a file's media clock moves only with frames.

    pipeline = Pipeline(load_config("configs/laptop.yaml"))
    pipeline.on("attributes_ready", lambda event: print(event.track_id, event.attributes.age_years))
    pipeline.run()                      # or start(), results(), stop(); stop() may be called from a callback
    print(pipeline.stats().format())
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time

import cv2

from runtime.backends import Backend, describe, inference_precision, open_backend
from runtime.capture import Capture
from runtime.classifier import Classifier
from runtime.config import Config
from runtime.events import Callback, EventBus
from runtime.jsonl import RANDOM_WEIGHTS_WARNING
from runtime.metadata import ModelInfo
from runtime.perception import Perception
from runtime.queues import put_newest, put_until_stopped
from runtime.sinks import Sink, SinkRunner
from runtime.smoothing import smoothing_settings
from runtime.stats import LatencyRecorder, PipelineStats
from runtime.types import EventKind, Frame, FrameResult

log = logging.getLogger(__name__)

NO_MODEL_MESSAGE = (
    "no model given (--model or classifier.model): running face detection and tracking only. "
    "To read age, gender and emotion, get the published model with `facecue fetch thesis-dora` "
    "(README, 'Get the real model') or export your own with `python -m export` ('Export a model'), "
    "and pass it with --model MODEL.onnx"
)
POLL_SECONDS = 0.1  # the perception loop's wait for a frame; a silent live source ages its tracks this often
RESULTS_WAITING = {"fast": 4, "realtime": 1}  # FrameResults waiting for the caller; real time keeps the newest


class Pipeline:
    def __init__(self, config: Config, backend: Backend | None = None, sinks: list[Sink] | None = None):
        """Opens the model (errors for a missing or non-facecue model come from here); `backend`
        replaces the one that `config.classifier` describes (for callers that wrap one). `sinks`
        (runtime.sinks) get every frame and event; the pipeline closes them when it stops."""
        self.config = config
        self.latencies = LatencyRecorder()
        self.sinks = SinkRunner(sinks or (), lossless=config.source.mode == "fast")
        self.events = EventBus(config.events.queue_size, self.latencies, tap=self.sinks.put_event)
        model = config.classifier.model
        self.backend = backend if backend is not None else (open_backend(model, config.classifier) if model else None)
        self.info: ModelInfo | None = self.backend.info if self.backend is not None else None
        self._smoothing = smoothing_settings(config.smoothing, self.info) if self.info is not None else None
        self.capture: Capture | None = None
        self.classifier: Classifier | None = None
        self.perception: Perception | None = None
        self._results: queue.Queue[FrameResult] = queue.Queue(maxsize=RESULTS_WAITING[config.source.mode])
        self._stop = threading.Event()
        self._stop_requested = False  # a plain flag, so that a signal handler may set it (request_stop)
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self._perception_ended_at: float | None = None
        self.error: BaseException | None = None

    # --- API ---------------------------------------------------------------------------------------

    @property
    def model_label(self) -> str:
        if self.info is None:
            return "no model"
        return f"{self.info.backbone}/{self.info.adapter} {self.info.precision}"

    @property
    def random_weights(self) -> bool:
        return self.info is not None and self.info.random_weights

    @property
    def frames_processed(self) -> int:
        return self.perception.frames_processed if self.perception is not None else 0

    @property
    def requests_deferred(self) -> int:
        """Due crops the classifier could not take when they were due."""
        return self.perception.requests_deferred if self.perception is not None else 0

    def add_sink(self, sink: Sink) -> None:
        """Write every frame and event to `sink` too (before start(); closed when the pipeline stops)."""
        self.sinks.add(sink)

    def on(self, kind: EventKind | str, callback: Callback) -> None:
        """Call `callback(event)` on the event thread for every event of this kind."""
        try:
            self.events.on(kind, callback)
        except ValueError:
            raise ValueError(f"unknown event kind {kind!r} (known: {[k.value for k in EventKind]})") from None

    def start(self, wait_for_model: bool = False) -> None:
        """Open the source and the detector and start the threads; raises SourceError for a bad source.
        `wait_for_model`: open the source only after the classifier's warm-up inference (seconds for a
        large model on a CPU); by default frames flow at once and classification joins when ready."""
        config = self.config
        cv2.setNumThreads(config.classifier.opencv_threads)
        if self.info is None:
            log.warning(NO_MODEL_MESSAGE)
        elif self.info.random_weights:
            log.warning("model %s: %s", self.model_label, RANDOM_WEIGHTS_WARNING)
        classifier = None
        if self.backend is not None:  # built here, started below: perception needs its queues
            classifier = Classifier(self.backend, config.classifier.max_batch, config.classifier.batch_wait,
                                    config.classifier.queue_size, self.latencies,
                                    max_consecutive_errors=config.classifier.max_consecutive_errors)
        self.perception = Perception(config, self.info, self._smoothing, classifier, self.events, self.latencies,
                                     stopping=self._stop)
        self.classifier = classifier
        self.capture = Capture(config.source.uri, mode=config.source.mode, pace_files=config.source.pace_files,
                               live=True if config.source.loop else None,  # a live file is reopened at its end
                               reopen_initial_delay=config.source.reopen_initial_delay,
                               reopen_max_delay=config.source.reopen_max_delay,
                               reopen_attempts=config.source.reopen_attempts,
                               read_timeout=config.source.read_timeout)
        if self.classifier is not None:
            self.classifier.start()
            if wait_for_model:
                self.classifier.ready.wait()
        try:
            self.capture.start()
        except BaseException:
            self.perception.close()
            if self.classifier is not None:
                self.classifier.stop()
            raise
        self.events.start()
        self.sinks.start()
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._perceive, name="facecue-perception", daemon=True)
        self._thread.start()

    def results(self, timeout: float | None = None) -> FrameResult | None:
        """The next FrameResult, or None when none arrived within `timeout`."""
        try:
            return self._results.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def finished(self) -> bool:
        """Perception has ended (end of file, error or stop) and every FrameResult has been taken."""
        return self._thread is not None and not self._thread.is_alive() and self._results.empty()

    def request_stop(self, force: bool = False) -> None:
        """Ask run() to stop within 0.1 s; `force` also skips every wait of the shutdown (slow callbacks,
        slow sinks). Only sets flags, so it is safe from a signal handler (runtime.run)."""
        self._stop_requested = True
        if force:
            self.events.abandon()
            self.sinks.abandon()

    def stop(self, force: bool = False) -> None:
        """Stop and join every thread; deliver pending events (`disappeared` for live tracks), then write the
        statistics to the sinks and close them. Idempotent. The lifecycle events still queued are delivered
        however long the callbacks take; `force` ends that wait (what is left is counted as dropped).
        Called from a callback (the event thread): only signals the stop and returns; run() (or the caller's
        own stop()) does the rest on its thread."""
        self._stop_requested = True
        self._stop.set()
        if force:
            self.request_stop(force=True)
        if threading.current_thread() is self._thread or self.events.on_own_thread() or self.sinks.on_own_thread():
            return
        if self._thread is not None:
            self._thread.join()
        if self.capture is not None:
            self.capture.stop()
        if self.classifier is not None:
            self.classifier.stop()
        self.events.close(self.config.events.shutdown_timeout)
        if self.perception is not None:
            self.perception.close()
        self.sinks.close(self.stats().to_dict())

    def close(self) -> None:
        """Stop, and release the model."""
        self.stop()
        if self.backend is not None:
            self.backend.close()

    def run(self, on_frame=None, max_seconds: float | None = None, wait_for_model: bool = False) -> None:
        """Start, hand each FrameResult to `on_frame` (return False to stop) until the source ends,
        then stop. Raises the error that ended perception, if any."""
        self.start(wait_for_model)
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not self._stop_requested and not (deadline is not None and time.monotonic() >= deadline):
                result = self.results(timeout=0.1)
                if result is None:
                    if self.finished:
                        break
                    continue
                if on_frame is not None and on_frame(result) is False:
                    break
        finally:
            self.stop()
        if self.error is not None:
            raise self.error

    def stats(self) -> PipelineStats:
        end = self._perception_ended_at or time.monotonic()
        duration = max(1e-9, end - self._started_at) if self._started_at is not None else 0.0
        capture = self.capture.stats() if self.capture is not None else None
        classifier = self.classifier
        classifications = classifier.classifications if classifier else 0
        stages = {stage: s for stage in ("capture", "detect", "track", "crop", "infer", "smooth", "callbacks")
                  if (s := self.latencies.summary(stage)) is not None}
        return PipelineStats(
            duration_s=duration,
            frames_processed=self.frames_processed,
            frames_read=capture.frames_read if capture else 0,
            frames_dropped=capture.frames_dropped if capture else 0,
            source_reopens=capture.reopens if capture else 0,
            fps=self.frames_processed / duration if duration else 0.0,
            classifications=classifications,
            classifications_per_s=classifications / duration if duration else 0.0,
            batches=classifier.batches if classifier else 0,
            requests_deferred=self.requests_deferred,
            events_delivered=self.events.delivered,
            events_dropped=self.events.dropped,
            callback_errors=self.events.callback_errors,
            sink_frames_dropped=self.sinks.frames_dropped,
            sink_events_dropped=self.sinks.events_dropped,
            sink_errors=self.sinks.errors,
            stages=stages,
            end_to_end=self.latencies.summary("end_to_end"),
            frames_undecodable=capture.frames_undecodable if capture else 0,
            source_stalls=capture.stalls if capture else 0,
            detector_errors=self.perception.detector_errors if self.perception is not None else 0,
            classifier_errors=classifier.errors if classifier else 0,
            backend=describe(self.backend) if self.backend is not None else "",
            inference_precision=inference_precision(self.backend) if self.backend is not None else "",
        )

    # --- perception thread -------------------------------------------------------------------------

    def _perceive(self) -> None:
        last_frame: Frame | None = None
        ended = False  # the source ended normally (not an error, not stop())
        _lower_priority(self.config.classifier.perception_nice)
        try:
            while not self._stop.is_set():
                if self.classifier is not None and self.classifier.error is not None:
                    raise RuntimeError(f"the classifier failed: {self.classifier.error}") from self.classifier.error
                frame = self.capture.read(timeout=POLL_SECONDS)
                if frame is None:
                    if self.capture.finished:
                        if self.capture.error is not None:
                            raise self.capture.error
                        ended = True
                        break
                    if self.capture.clock_is_monotonic:  # a live source is silent: its clock goes on
                        self.perception.tick(time.monotonic())
                    continue
                last_frame = frame
                self._publish(self.perception.process(frame))
        except BaseException as error:
            log.error("perception stopped: %s", error)
            self.error = error
        finally:
            if ended:
                self.perception.finish_classifications(self.config.classifier.drain_timeout)
            self._perception_ended_at = time.monotonic()
            self.perception.close_tracks(last_frame)

    def _publish(self, result: FrameResult) -> None:
        """To the sinks (every frame), then to the caller: fast mode waits for the caller (lossless); real
        time: the newest result replaces an untaken one (a display wants the newest)."""
        self.sinks.put_frame(result)
        if self.config.source.mode == "fast":
            put_until_stopped(self._results, result, self._stop)
        else:
            put_newest(self._results, result)


def _lower_priority(nice: int) -> None:
    """Raise the calling thread's niceness (Linux: a thread id is a process id for setpriority), so that when
    perception and the classifier compete for a core, the classifier's inference gets the larger share."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + nice)
    except OSError as error:
        log.warning("cannot lower the perception thread's priority: %s", error)
