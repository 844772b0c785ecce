"""The live pipeline: capture → detect → track → classify → smooth → events (design.md, "Runtime stages").

Threads: capture (runtime.capture), perception (here), classifier (runtime.classifier), events
(runtime.events); the caller's thread polls `results()` for the overlay, or calls `run()`.
Perception is the only writer of track and attribute state; per frame it
  1. converts the frame to RGB once, detects faces and updates the tracker;
  2. folds the classifier's returned readings into each track's smoother (→ attribute events);
  3. picks the tracks due for classification, crops them at the model's size and margin, submits them;
  4. publishes a FrameResult (real-time mode: newest wins; fast mode: lossless).
Without a model, steps 2 and 3 are skipped: detection, tracking and the overlay still run.
Tracking, the policy, smoothing and hysteresis run on the stream's clock (`Frame.stream_time`: a file's
frame position, a live source's capture time), so a file scored in fast mode gives the same tracks however
fast the machine or the caller is; latencies and events' `timestamp` use the monotonic capture time.

    pipeline = Pipeline(load_config("configs/laptop.yaml"))
    pipeline.on("attributes_ready", lambda event: print(event.track_id, event.attributes.age_years))
    pipeline.run()                      # or start(), results(), stop()
    print(pipeline.stats().format())
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.backends import Backend, open_backend
from runtime.capture import Capture
from runtime.classifier import Classifier, ClassificationResult, CropRequest
from runtime.config import Config, ConfigError
from runtime.crop import crop_face
from runtime.detector import FaceDetector
from runtime.events import Callback, EventBus
from runtime.jsonl import RANDOM_WEIGHTS_WARNING
from runtime.metadata import ModelInfo
from runtime.policy import DUE, Candidate, overdue, readiness, select
from runtime.quality import face_quality
from runtime.smoothing import TrackSmoother, smoothing_settings
from runtime.stats import LatencyRecorder, PipelineStats
from runtime.tracker import FaceTracker
from runtime.types import Attributes, EventKind, FaceEvent, Frame, FrameResult, Track, TrackResult

log = logging.getLogger(__name__)

NO_MODEL_MESSAGE = (
    "no model given (--model or classifier.model): running face detection and tracking only. "
    "To read age, gender and emotion, export a facecue model with `python -m export` "
    "(README, section 'Export a model') and pass it with --model MODEL.onnx"
)
RESULTS_WAITING = {"fast": 4, "realtime": 1}  # FrameResults waiting for the caller; real time keeps the newest


@dataclass
class _TrackState:
    """What perception keeps per confirmed track beside the tracker's own state."""

    smoother: TrackSmoother | None
    ready_sent: bool = False


class Pipeline:
    def __init__(self, config: Config, backend: Backend | None = None):
        """Opens the model (errors for a missing or non-facecue model come from here); `backend`
        replaces the one that `config.classifier` describes (for callers that wrap one)."""
        self.config = config
        self.latencies = LatencyRecorder()
        self.events = EventBus(config.events.queue_size, self.latencies)
        model = config.classifier.model
        self.backend = backend if backend is not None else (open_backend(model, config.classifier) if model else None)
        self.info: ModelInfo | None = self.backend.info if self.backend is not None else None
        self._smoothing = smoothing_settings(config.smoothing, self.info) if self.info is not None else None
        self.capture: Capture | None = None
        self.classifier: Classifier | None = None
        self._tracker: FaceTracker | None = None
        self._detector: FaceDetector | None = None
        self._tracks: dict[int, _TrackState] = {}
        self._in_flight: set[int] = set()
        self._results: queue.Queue[FrameResult] = queue.Queue(maxsize=RESULTS_WAITING[config.source.mode])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self._perception_ended_at: float | None = None
        self.error: BaseException | None = None
        self.frames_processed = 0
        self.requests_deferred = 0

    # --- API ---------------------------------------------------------------------------------------

    @property
    def model_label(self) -> str:
        if self.info is None:
            return "no model"
        return f"{self.info.backbone}/{self.info.adapter} {self.info.precision}"

    @property
    def random_weights(self) -> bool:
        return self.info is not None and self.info.random_weights

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
        try:
            self._tracker = FaceTracker(config.tracker.confirm_hits, config.tracker.lost_after, config.tracker.remove_after,
                                        max_tracks=config.tracker.max_tracks, **config.tracker.association)
        except TypeError as error:
            raise ConfigError(f"tracker.association: {error}") from None
        self._detector = FaceDetector(config.detector.model, config.detector.min_confidence, config.detector.min_face_size)
        self.capture = Capture(config.source.uri, mode=config.source.mode, pace_files=config.source.pace_files,
                               live=True if config.source.loop else None,  # a live file is reopened at its end
                               reopen_initial_delay=config.source.reopen_initial_delay,
                               reopen_max_delay=config.source.reopen_max_delay,
                               reopen_attempts=config.source.reopen_attempts)
        if self.backend is not None:
            self.classifier = Classifier(self.backend, config.classifier.max_batch, config.classifier.batch_wait,
                                         config.classifier.queue_size, self.latencies)
            self.classifier.start()
            if wait_for_model:
                self.classifier.ready.wait()
        try:
            self.capture.start()
        except BaseException:
            self._detector.close()
            if self.classifier is not None:
                self.classifier.stop()
            raise
        self.events.start()
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

    def stop(self) -> None:
        """Stop and join every thread; deliver pending events (`disappeared` for live tracks). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.capture is not None:
            self.capture.stop()
        if self.classifier is not None:
            self.classifier.stop()
        self.events.close(self.config.events.shutdown_timeout)
        if self._detector is not None:
            self._detector.close()
            self._detector = None

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
            while not (deadline is not None and time.monotonic() >= deadline):
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
            stages=stages,
            end_to_end=self.latencies.summary("end_to_end"),
        )

    # --- perception thread -------------------------------------------------------------------------

    def _perceive(self) -> None:
        last_frame: Frame | None = None
        _lower_priority(self.config.classifier.perception_nice)
        try:
            while not self._stop.is_set():
                if self.classifier is not None and self.classifier.error is not None:
                    raise RuntimeError(f"the classifier failed: {self.classifier.error}") from self.classifier.error
                frame = self.capture.read(timeout=0.1)
                if frame is None:
                    if self.capture.finished:
                        if self.capture.error is not None:
                            raise self.capture.error
                        break
                    continue
                last_frame = frame
                self._publish(self._process(frame))
        except BaseException as error:
            log.error("perception stopped: %s", error)
            self.error = error
        finally:
            self._perception_ended_at = time.monotonic()
            self._close_tracks(last_frame)

    def _process(self, frame: Frame) -> FrameResult:
        latencies = {"capture": time.monotonic() - frame.timestamp}
        started = time.monotonic()
        now = frame.stream_time
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        detections = self._detector.detect(rgb, now)
        latencies["detect"], started = _lap(started)
        update = self._tracker.update(detections, now)
        latencies["track"], started = _lap(started)
        for track in update.appeared:
            smoother = TrackSmoother(self.info, self._smoothing) if self.info is not None else None
            self._tracks[track.id] = _TrackState(smoother)
            self._emit(EventKind.APPEARED, track, frame)
        if self.classifier is not None:
            infer = self._apply_results(self.classifier.results(), update.tracks)
            if infer:
                latencies["infer"] = infer
            latencies["smooth"], started = _lap(started)
            self._request_classifications(update.tracks, rgb, frame)
            latencies["crop"], started = _lap(started)
        for track in update.disappeared:
            self._emit(EventKind.DISAPPEARED, track, frame)
            self._tracks.pop(track.id, None)
            self._in_flight.discard(track.id)
        for stage, seconds in latencies.items():
            if stage != "infer":  # the classifier records its own
                self.latencies.add(stage, seconds)
        self.frames_processed += 1
        tracks = [TrackResult(track, self._attributes(track.id)) for track in update.tracks]
        return FrameResult(frame=frame, tracks=tracks, latencies=latencies)

    def _apply_results(self, results: list[ClassificationResult], tracks: list[Track]) -> float:
        """Fold returned readings into the smoothers; emit attribute events. Returns the longest inference."""
        boxes = {track.id: track.box for track in tracks}
        infer = 0.0
        for result in results:
            self._in_flight.discard(result.track_id)
            infer = max(infer, result.infer_seconds)
            state = self._tracks.get(result.track_id)
            if state is None or state.smoother is None:
                continue  # the track disappeared while its crop was being classified
            changes = state.smoother.update(result.logits, result.quality, result.media_time)
            box = boxes.get(result.track_id, (0.0, 0.0, 0.0, 0.0))
            if not state.ready_sent and state.smoother.ready(self.config.events.min_observations):
                state.ready_sent = True
                self._emit_attributes(EventKind.ATTRIBUTES_READY, result, box, state)
            elif state.ready_sent and changes:  # before `attributes_ready` no label has been announced
                self._emit_attributes(EventKind.ATTRIBUTE_CHANGED, result, box, state, changes)
        return infer

    def _request_classifications(self, tracks: list[Track], rgb: np.ndarray, frame: Frame) -> None:
        size, margin = self.info.input_size, self.info.crop_margin
        now = frame.stream_time
        policy = self.config.policy
        candidates = []
        ready = [(track, readiness(track, now, policy.interval, policy.batch_fill, self._in_flight)) for track in tracks]
        if not any(kind == DUE for _, kind in ready):
            return  # early tracks only ride along with a due one
        for track, kind in ready:
            if kind is None:
                continue
            box = track.detection.box
            crop = crop_face(rgb, box, size, margin)
            # quality on a crop of one fixed size, so sharpness compares across faces and models
            reference = crop_face(rgb, box, int(policy.reference_side), margin)
            quality = face_quality(track.detection, reference, policy.reference_side, policy.sharpness_reference)
            late = overdue(track, now, policy.interval, policy.max_quality_wait)
            candidates.append(Candidate(track, crop, quality.total, kind, late))
        selection = select(candidates, self.classifier.capacity(), self.classifier.max_batch, policy.min_quality)
        self.requests_deferred += selection.deferred
        for candidate in selection.chosen:
            request = CropRequest(candidate.track.id, candidate.crop, candidate.quality, frame.timestamp, now)
            if not self.classifier.submit(request):
                self.requests_deferred += 1
                continue
            self._in_flight.add(candidate.track.id)
            self._tracker.mark_classified(candidate.track.id, now)

    def _attributes(self, track_id: int) -> Attributes:
        state = self._tracks.get(track_id)
        if state is None or state.smoother is None:
            return Attributes()
        return state.smoother.attributes()

    def _emit(self, kind: EventKind, track: Track, frame: Frame) -> None:
        self.events.emit(FaceEvent(kind, track.id, frame.timestamp, track.box, self._attributes(track.id),
                                   media_time=frame.stream_time))

    def _emit_attributes(self, kind, result: ClassificationResult, box, state: _TrackState, changes=None) -> None:
        self.events.emit(FaceEvent(kind, result.track_id, result.timestamp, box, state.smoother.attributes(),
                                   changes or {}, media_time=result.media_time))

    def _publish(self, result: FrameResult) -> None:
        """Fast mode: wait for the caller (lossless). Real time: the newest result replaces an untaken one."""
        if self.config.source.mode == "fast":
            while not self._stop.is_set():
                try:
                    self._results.put(result, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        while True:
            try:
                self._results.put_nowait(result)
                return
            except queue.Full:
                try:
                    self._results.get_nowait()
                except queue.Empty:
                    pass

    def _close_tracks(self, last_frame: Frame | None) -> None:
        """At the end: `disappeared` for every confirmed track still alive, so each `appeared` is matched."""
        if self._tracker is None:
            return
        for track in self._tracker.close_all():
            if track.id in self._tracks:  # a track in self._tracks appeared, so a frame was processed
                self._emit(EventKind.DISAPPEARED, track, last_frame)
        self._tracks.clear()


def _lap(started: float) -> tuple[float, float]:
    now = time.monotonic()
    return now - started, now


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
