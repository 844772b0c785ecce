"""The classifier thread: batches face crops and runs one inference per batch (design.md, "Threads").

Perception submits `CropRequest`s, one frame's crops as one round (`submit_round`); the thread takes the
first one, waits until that round is fully queued and up to `batch_wait` for more (at most `max_batch`), runs
the backend once and puts one `ClassificationResult` per crop on the result queue that perception drains
(`results()` never blocks; `wait_results()` waits for the crops still being classified: offline scoring and
the end of a stream). Both queues are bounded: `capacity()` tells perception how many more requests the
classifier can take, so nothing is ever queued without bound.
A failed inference is retried on the same batch with backoff (0.05 s doubling, at most 1 s) and counted
(`errors`); only `max_consecutive_errors` failures in a row set `error`, which stops the pipeline.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from runtime.backends import Backend, cancel
from runtime.queues import put_until_stopped
from runtime.stats import LatencyRecorder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropRequest:
    track_id: int
    crop: np.ndarray  # uint8 S×S×3 RGB at the model's input size
    quality: float  # in [0, 1]; weights this reading in the smoothing
    timestamp: float  # capture time of the frame the crop was cut from
    media_time: float | None = None  # that frame's stream time (Frame.stream_time); None → timestamp


@dataclass(frozen=True)
class ClassificationResult:
    track_id: int
    logits: dict[str, np.ndarray]  # task → float32 [C]
    quality: float
    timestamp: float  # capture time of the crop's frame
    media_time: float  # stream time of the crop's frame; smoothing runs on it
    batch_size: int
    infer_seconds: float  # time of the batch's inference


class Classifier:
    def __init__(self, backend: Backend, max_batch: int = 8, batch_wait: float = 0.005, queue_size: int = 8,
                 latencies: LatencyRecorder | None = None, max_consecutive_errors: int = 5):
        self.backend = backend
        self.max_consecutive_errors = max(1, max_consecutive_errors)
        self.errors = 0  # failed inferences, each retried
        self.max_batch = max(1, min(max_batch, backend.max_batch))
        self.batch_wait = batch_wait
        self.max_outstanding = queue_size + self.max_batch  # waiting + in the running batch
        self.latencies = latencies or LatencyRecorder()
        self._requests: queue.Queue[CropRequest] = queue.Queue(maxsize=queue_size)
        self._results: queue.Queue[ClassificationResult] = queue.Queue(maxsize=self.max_outstanding)
        self._outstanding = 0
        self._lock = threading.Lock()
        self._round = threading.Lock()  # held while a round is being queued, so a batch never splits it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # set when the backend failed; the thread has stopped
        self.warmed_at: float | None = None  # monotonic time the warm-up inference finished
        self.ready = threading.Event()  # set after the warm-up (or when it failed)
        self.classifications = 0
        self.batches = 0
        self.busy_seconds = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="facecue-classifier", daemon=True)
        self._thread.start()

    def capacity(self) -> int:
        """How many more requests can be submitted now without blocking."""
        with self._lock:
            return max(0, min(self._requests.maxsize - self._requests.qsize(), self.max_outstanding - self._outstanding))

    def submit(self, request: CropRequest) -> bool:
        """Queue a request; False (and nothing queued) when the classifier is full."""
        with self._lock:
            if self._outstanding >= self.max_outstanding:
                return False
            try:
                self._requests.put_nowait(request)
            except queue.Full:
                return False
            self._outstanding += 1
        return True

    def submit_round(self, requests: list[CropRequest]) -> int:
        """Queue one frame's requests so that they share a batch; returns how many were accepted (the first ones)."""
        with self._round:
            for accepted, request in enumerate(requests):
                if not self.submit(request):
                    return accepted
        return len(requests)

    def results(self) -> list[ClassificationResult]:
        """Every result that has arrived since the last call (never blocks)."""
        drained = []
        while True:
            try:
                drained.append(self._results.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            self._outstanding -= len(drained)
        return drained

    def wait_results(self, timeout: float | None = None,
                     cancel: threading.Event | None = None) -> list[ClassificationResult]:
        """Every result still to come for the submitted requests, waiting up to `timeout` seconds (None: no
        limit); returns early with what has arrived when the classifier failed or stopped or `cancel` is set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        drained = []
        while not self.idle() and self.error is None and self._thread is not None and self._thread.is_alive():
            wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if wait <= 0 or (cancel is not None and cancel.is_set()):
                break
            try:
                result = self._results.get(timeout=wait)
            except queue.Empty:
                continue
            with self._lock:
                self._outstanding -= 1
            drained.append(result)
        return drained

    def idle(self) -> bool:
        with self._lock:
            return self._outstanding == 0

    def stop(self) -> None:
        """Stop the thread, aborting a running inference where the backend can."""
        self._stop.set()
        cancel(self.backend)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _warm_up(self) -> None:
        """One batch-1 inference before the first request: ONNX Runtime allocates its buffers on the
        first run, which would otherwise delay the first track's attributes."""
        size = self.backend.info.input_size
        started = time.monotonic()
        self.backend.run(np.zeros((1, size, size, 3), dtype=np.uint8))
        self.warmed_at = time.monotonic()
        log.info("classifier warmed up in %.0f ms", (self.warmed_at - started) * 1000.0)

    def _run(self) -> None:
        try:
            self._warm_up()
        except Exception as error:
            self._fail(error)
            return
        finally:
            self.ready.set()
        while not self._stop.is_set():
            batch = self._collect_batch()
            if not batch:
                continue
            results = self._classify_with_retry(batch)
            if results is None:
                return
            for result in results:
                put_until_stopped(self._results, result, self._stop)

    def _classify_with_retry(self, batch: list[CropRequest]) -> list[ClassificationResult] | None:
        """The batch's results, retrying a failed inference; None when it failed too often or we stopped."""
        delay, failures = 0.05, 0
        while True:
            try:
                return self._classify(batch)
            except Exception as error:
                if self._stop.is_set():
                    return None  # the inference was cancelled by stop()
                self.errors += 1
                failures += 1
                if failures >= self.max_consecutive_errors:
                    self._fail(RuntimeError(f"inference failed {failures} times in a row: {error}"))
                    return None
                log.warning("inference failed (%s: %s); retrying in %.2f s", type(error).__name__, error, delay)
                if self._stop.wait(delay):
                    return None
                delay = min(2 * delay, 1.0)

    def _fail(self, error: Exception) -> None:
        """Surface a backend failure to the pipeline (which shuts down with it), unless we were stopping."""
        if self._stop.is_set():
            return  # the inference was cancelled by stop()
        log.exception("the classifier failed; stopping it")
        self.error = error

    def _collect_batch(self) -> list[CropRequest]:
        try:
            batch = [self._requests.get(timeout=0.1)]
        except queue.Empty:
            return []
        with self._round:  # a round being queued is complete before the batch closes
            pass
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self._requests.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _classify(self, batch: list[CropRequest]) -> list[ClassificationResult]:
        images = np.stack([request.crop for request in batch])
        started = time.monotonic()
        logits = self.backend.run(images)
        seconds = time.monotonic() - started
        self.latencies.add("infer", seconds)
        self.classifications += len(batch)
        self.batches += 1
        self.busy_seconds += seconds
        return [
            ClassificationResult(
                track_id=request.track_id,
                logits={task: values[i] for task, values in logits.items()},
                quality=request.quality,
                timestamp=request.timestamp,
                media_time=request.timestamp if request.media_time is None else request.media_time,
                batch_size=len(batch),
                infer_seconds=seconds,
            )
            for i, request in enumerate(batch)
        ]
