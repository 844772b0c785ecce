"""Perception: one Frame in, one FrameResult and its FaceEvents out (design.md, "Threads").

Perception is the only writer of track and attribute state; per frame it
  1. converts the frame to RGB once, ends every track at a scene cut (runtime/cuts.py, `disappeared` with
     reason "cut"), detects faces, describes their appearance (runtime/appearance.py) and updates the
     tracker; tentative tracks reach the FrameResult only with `tracker.report_tentative`;
  2. folds the classifier's returned readings into each track's smoother (→ attribute events);
  3. picks the tracks due for classification, crops them at the model's size and margin, submits them
     as one round; with `classifier.synchronous` it then waits for their readings and folds them in (2.),
     so an offline run gives the same attributes and events on any CPU.
It talks to the classifier only through its request and result queues (`submit_round`, `results`,
`wait_results`). At the end of a stream `finish_classifications` folds in the crops still being classified,
so their attribute events come before the final `disappeared` (`close_tracks`).
Without a model, steps 2 and 3 are skipped: detection and tracking still run.
Tracking, the policy, smoothing and hysteresis run on the stream's clock (`Frame.stream_time`); events'
`timestamp` is the monotonic capture time. The loop that feeds it frames lives in runtime.pipeline; while a
live source sends no frames, that loop calls `tick(now)` so tracks still age and `disappeared` still comes.
A detector exception is retried on the same frame with backoff; `detector.max_consecutive_errors` failures
in a row raise it (the pipeline then stops, closing every track).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.appearance import with_appearance
from runtime.classifier import Classifier, ClassificationResult, CropRequest
from runtime.config import Config, ConfigError
from runtime.crop import crop_face
from runtime.cuts import CutDetector
from runtime.detector import FaceDetector
from runtime.events import EventBus
from runtime.metadata import ModelInfo
from runtime.policy import DUE, Candidate, overdue, readiness, select
from runtime.quality import face_quality
from runtime.smoothing import SmoothingSettings, TrackSmoother
from runtime.stats import LatencyRecorder
from runtime.tracker import FaceTracker
from runtime.types import Attributes, Box, EventKind, FaceEvent, Frame, FrameResult, Track, TrackResult, TrackState

log = logging.getLogger(__name__)


@dataclass
class _TrackAttributeState:
    """What perception keeps per confirmed track beside the tracker's own state."""

    smoother: TrackSmoother | None  # None without a model
    ready_sent: bool = False  # `attributes_ready` has been emitted


class Perception:
    def __init__(self, config: Config, info: ModelInfo | None, smoothing: SmoothingSettings | None,
                 classifier: Classifier | None, events: EventBus, latencies: LatencyRecorder,
                 stopping: threading.Event | None = None):
        """Opens the tracker (ConfigError for bad `tracker.association`) and the detector. `stopping`: set when
        the pipeline stops; waits for the classifier then end at once."""
        self.config = config
        self.info = info
        self.smoothing = smoothing
        self.classifier = classifier
        self.events = events
        self.latencies = latencies
        self.stopping = stopping
        try:
            self.tracker = FaceTracker(config.tracker.confirm_hits, config.tracker.lost_after, config.tracker.remove_after,
                                       max_tracks=config.tracker.max_tracks, **config.tracker.association)
        except TypeError as error:
            raise ConfigError(f"tracker.association: {error}") from None
        self.cuts = CutDetector(config.tracker.cut_threshold)
        self.cuts_seen = 0
        self.detector = FaceDetector(config.detector.model, config.detector.min_confidence, config.detector.min_face_size,
                                     tiles=config.detector.tiles, tile_budget_ms=config.detector.tile_budget_ms,
                                     tile_threads=config.detector.tile_threads)
        self._tracks: dict[int, _TrackAttributeState] = {}  # every track that has `appeared` and not yet disappeared
        self._in_flight: set[int] = set()  # tracks with a crop at the classifier
        self._tracks_now: list[Track] = []  # the last frame's tracks (boxes for the events of late readings)
        self.frames_processed = 0
        self.requests_deferred = 0
        self.detector_errors = 0  # detector exceptions, each retried
        self._last_frame_time: float | None = None  # stream time of the last frame processed

    def process(self, frame: Frame) -> FrameResult:
        latencies = {"capture": time.monotonic() - frame.timestamp}
        started = time.monotonic()
        now = frame.stream_time
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        detections = self._detect(rgb, now)
        self._last_frame_time = now
        latencies["detect"], started = _lap(started)
        if self.cuts.is_cut(rgb):  # before the update, so no track continues onto the new shot
            self._end_tracks(frame, "cut")
            self.cuts_seen += 1
        if self.config.tracker.appearance:
            detections = with_appearance(rgb, detections)
        update = self.tracker.update(detections, now, (rgb.shape[1], rgb.shape[0]))
        latencies["track"], started = _lap(started)
        for track in update.appeared:
            smoother = TrackSmoother(self.info, self.smoothing) if self.info is not None else None
            self._tracks[track.id] = _TrackAttributeState(smoother)
            self._emit(EventKind.APPEARED, track, frame)
        if self.classifier is not None:
            infer = self._apply_results(self.classifier.results(), update.tracks)
            latencies["smooth"], started = _lap(started)
            self._request_classifications(update.tracks, rgb, frame)
            latencies["crop"], started = _lap(started)
            if self.config.classifier.synchronous:  # this frame's readings before the next frame
                results = self.classifier.wait_results(None, self.stopping)
                infer = max(infer, self._apply_results(results, update.tracks))
            if infer:
                latencies["infer"] = infer
        for track in update.disappeared:
            self._emit(EventKind.DISAPPEARED, track, frame, reason="removed")
            self._tracks.pop(track.id, None)
            self._in_flight.discard(track.id)
        for stage, seconds in latencies.items():
            if stage != "infer":  # the classifier records its own
                self.latencies.add(stage, seconds)
        self.frames_processed += 1
        self._tracks_now = update.tracks
        shown = [t for t in update.tracks if self.config.tracker.report_tentative or t.state != TrackState.TENTATIVE]
        tracks = [TrackResult(track, self._attributes(track.id)) for track in shown]
        return FrameResult(frame=frame, tracks=tracks, latencies=latencies)

    def tick(self, stream_time: float) -> None:
        """No frame has arrived: age the tracks to `stream_time` (the live source's clock) and emit `disappeared`
        for those unseen longer than tracker.remove_after. Nothing happens until the last frame is older than
        tracker.lost_after, so a slow camera's tentative tracks are not dropped between two of its frames."""
        last = self._last_frame_time
        if last is None or stream_time - last <= self.config.tracker.lost_after:
            return
        update = self.tracker.update([], stream_time)
        self._tracks_now = update.tracks
        timestamp = time.monotonic()
        for track in update.disappeared:
            if track.id in self._tracks:
                self.events.emit(FaceEvent(EventKind.DISAPPEARED, track.id, timestamp, track.box,
                                           self._attributes(track.id), media_time=stream_time, reason="removed"))
            self._tracks.pop(track.id, None)
            self._in_flight.discard(track.id)

    def finish_classifications(self, timeout: float) -> None:
        """At the end of a stream: wait up to `timeout` seconds for the crops still being classified and fold
        their readings in, so their attribute events come before `close_tracks`' `disappeared`."""
        if self.classifier is None or self.classifier.idle():
            return
        self._apply_results(self.classifier.wait_results(timeout, self.stopping), self._tracks_now)
        if not self.classifier.idle():
            log.warning("end of stream: crops still being classified after %.1f s (classifier.drain_timeout) "
                        "are left out", timeout)

    def close_tracks(self, last_frame: Frame | None) -> None:
        """At the end: `disappeared` for every confirmed track still alive, so each `appeared` is matched."""
        self._end_tracks(last_frame, "shutdown")

    def _end_tracks(self, frame: Frame | None, reason: str) -> None:
        """End every track (`disappeared` with `reason` for those that appeared); their late readings are dropped."""
        for track in self.tracker.close_all():
            if track.id in self._tracks:  # a track in self._tracks appeared, so a frame was processed
                self._emit(EventKind.DISAPPEARED, track, frame, reason=reason)
        self._tracks.clear()
        self._in_flight.clear()

    def close(self) -> None:
        """Release the detector. Idempotent."""
        self.detector.close()

    def _detect(self, rgb: np.ndarray, now: float) -> list:
        """The detector's faces; an exception is retried with backoff (0.05 s doubling, at most 1 s), and
        raised after `detector.max_consecutive_errors` failures in a row."""
        limit, delay, attempt = self.config.detector.max_consecutive_errors, 0.05, 0
        while True:
            try:
                return self.detector.detect(rgb, now)
            except Exception as error:
                self.detector_errors += 1
                attempt += 1
                if attempt >= limit or (self.stopping is not None and self.stopping.is_set()):
                    raise RuntimeError(f"the face detector failed {attempt} times in a row: {error}") from error
                log.warning("the face detector failed (%s: %s); retrying in %.2f s", type(error).__name__, error, delay)
                if self.stopping is not None:
                    self.stopping.wait(delay)
                else:
                    time.sleep(delay)
                delay = min(2 * delay, 1.0)

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
            # quality on a crop of one fixed size, so sharpness compares across faces and models
            reference = crop_face(rgb, track.detection.box, int(policy.reference_side), margin)
            quality = face_quality(track.detection, reference, policy.reference_side, policy.sharpness_reference)
            late = overdue(track, now, policy.interval, policy.max_quality_wait)
            candidates.append(Candidate(track, quality.total, kind, late))
        selection = select(candidates, self.classifier.capacity(), self.classifier.max_batch, policy.min_quality)
        # only the chosen tracks are cut at the model's size: deferred or waiting ones cost no resize
        requests = [CropRequest(c.track.id, crop_face(rgb, c.track.detection.box, size, margin), c.quality,
                                frame.timestamp, now)
                    for c in selection.chosen]
        accepted = self.classifier.submit_round(requests)
        self.requests_deferred += selection.deferred + len(requests) - accepted
        for candidate in selection.chosen[:accepted]:
            self._in_flight.add(candidate.track.id)
            self.tracker.mark_classified(candidate.track.id, now)

    def _attributes(self, track_id: int) -> Attributes:
        state = self._tracks.get(track_id)
        if state is None or state.smoother is None:
            return Attributes()
        return state.smoother.attributes()

    def _emit(self, kind: EventKind, track: Track, frame: Frame, reason: str | None = None) -> None:
        self.events.emit(FaceEvent(kind, track.id, frame.timestamp, track.box, self._attributes(track.id),
                                   media_time=frame.stream_time, reason=reason))

    def _emit_attributes(self, kind: EventKind, result: ClassificationResult, box: Box,
                         state: _TrackAttributeState, changes: dict | None = None) -> None:
        self.events.emit(FaceEvent(kind, result.track_id, result.timestamp, box, state.smoother.attributes(),
                                   changes or {}, media_time=result.media_time))


def _lap(started: float) -> tuple[float, float]:
    now = time.monotonic()
    return now - started, now
