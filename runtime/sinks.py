"""Sinks: where every processed frame and every event is written (JSON lines, the overlay recording, and
transports such as ROS 2 or MCAP beside them). design.md, "Sinks".

A sink is any object with

    write_event(event: FaceEvent) -> None     # every event, attribute_changed unmerged
    write_frame(result: FrameResult) -> None  # every processed frame
    close() -> None                           # once, at the end: finish and release the file or connection

and, optionally, `write_stats(stats: dict) -> None`, called once just before close() with the run's final
`PipelineStats.to_dict()`. runtime.jsonl.JsonlWriter is the model. Give sinks to the pipeline with
`Pipeline(config, sinks=[...])` or `pipeline.add_sink(sink)` before start(); the pipeline closes them when it
stops (stop(), close() or the end of run()).

Feeding (`SinkRunner`, one per pipeline): perception puts each frame's events and then its FrameResult on one
bounded queue, and one thread writes them to every sink in that order. So in every sink the events a frame
caused (appeared, attributes_ready, attribute_changed, disappeared) come just before that frame, and the
closing `disappeared` events come after the last frame. When the queue holds `queue_size` frames and
attribute_changed events:
- fast mode: perception waits for room (back-pressure; nothing is lost);
- real-time mode: the new frame or attribute_changed event is dropped and counted
  (statistics `sink_frames_dropped`, `sink_events_dropped`).
Lifecycle events (appeared, attributes_ready, disappeared) always go in; the tracker's track cap bounds them.
A sink that raises is logged (first time with its traceback) and counted (`sink_errors`); it keeps getting
records and the other sinks are not affected. `abandon()` (a second Ctrl-C) makes the thread skip the frames
still queued (counted as dropped) and stop waiting for room; the events are still written and every sink
is still closed.

Hand-written rather than queue.Queue: lifecycle events go past the bound, and only some items count towards it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Protocol

from runtime.events import LIFECYCLE
from runtime.overlay import FpsMeter, Status, VideoRecorder, draw
from runtime.types import FaceEvent, FrameResult

log = logging.getLogger(__name__)

QUEUE_SIZE = 64  # frames (and attribute_changed events) waiting for the sinks: about 2 s of a 30 fps camera


class Sink(Protocol):
    def write_event(self, event: FaceEvent) -> None: ...
    def write_frame(self, result: FrameResult) -> None: ...
    def close(self) -> None: ...


class SinkRunner:
    """One thread writing the pipeline's frames and events to a list of sinks (see the module docstring)."""

    def __init__(self, sinks=(), lossless: bool = True, queue_size: int = QUEUE_SIZE):
        self.sinks: list[Sink] = list(sinks)
        self.lossless = lossless
        self.queue_size = queue_size
        self._queue: deque[tuple[FaceEvent | FrameResult, bool]] = deque()  # (item, counts towards the bound)
        self._bounded = 0
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._abandoned = False  # plain flag: set from a signal handler
        self._failed: set[int] = set()  # ids of sinks that have raised (their first error is logged in full)
        self.frames_written = 0
        self.frames_dropped = 0
        self.events_dropped = 0
        self.errors = 0

    def add(self, sink: Sink) -> None:
        if self._thread is not None:
            raise RuntimeError("add sinks before the pipeline starts")
        self.sinks.append(sink)

    def start(self) -> None:
        if self.sinks and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="facecue-sinks", daemon=True)
            self._thread.start()

    def put_event(self, event: FaceEvent) -> None:
        if self.sinks:
            self._put(event, event.kind not in LIFECYCLE)

    def put_frame(self, result: FrameResult) -> None:
        if self.sinks:
            self._put(result, True)

    def on_own_thread(self) -> bool:
        """True when called from this object's thread (a callback or a sink)."""
        return self._thread is not None and self._thread is threading.current_thread()

    def abandon(self) -> None:
        """Stop waiting: skip queued frames, drop new ones. Only sets a flag (safe from a signal handler)."""
        self._abandoned = True

    def close(self, stats: dict | None = None) -> None:
        """After the producer has ended: write what is queued, then `write_stats(stats)` and close() each
        sink. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        if self._thread is not None:
            abandoned_at = None
            while self._thread.is_alive():
                self._thread.join(timeout=0.1)
                if self._abandoned:
                    abandoned_at = abandoned_at or time.monotonic()
                    if time.monotonic() - abandoned_at > 1.0:
                        log.warning("a sink is still writing after a forced stop; closing the sinks anyway")
                        break
        for sink in self.sinks:
            if stats is not None and hasattr(sink, "write_stats"):
                self._call(sink, sink.write_stats, stats)
            self._call(sink, sink.close)

    # --- internals ---------------------------------------------------------------------------------

    def _put(self, item: FaceEvent | FrameResult, bounded: bool) -> None:
        with self._condition:
            if bounded:
                while self._bounded >= self.queue_size:
                    if not self.lossless or self._abandoned or self._closing:
                        if isinstance(item, FrameResult):
                            self.frames_dropped += 1
                        else:
                            self.events_dropped += 1
                        return
                    self._condition.wait(timeout=0.05)  # fast mode: back-pressure
                self._bounded += 1
            self._queue.append((item, bounded))
            self._condition.notify_all()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:
                    return  # closing and everything written
                item, bounded = self._queue.popleft()
                if bounded:
                    self._bounded -= 1
                self._condition.notify_all()
            if isinstance(item, FrameResult):
                if self._abandoned:
                    self.frames_dropped += 1
                    continue
                for sink in self.sinks:
                    self._call(sink, sink.write_frame, item)
                self.frames_written += 1
            else:
                for sink in self.sinks:
                    self._call(sink, sink.write_event, item)

    def _call(self, sink: Sink, method, *args) -> None:
        try:
            method(*args)
        except Exception as error:
            self.errors += 1
            first = id(sink) not in self._failed
            self._failed.add(id(sink))
            log.log(logging.ERROR if first else logging.DEBUG, "sink %s: %s failed: %s",
                    type(sink).__name__, method.__name__, error, exc_info=error if first else None)


class OverlayRecorder:
    """The --record sink: draws the overlay on every processed frame and writes it to a VideoRecorder."""

    def __init__(self, recorder: VideoRecorder, model_label: str, random_weights: bool, font_scale: float = 0.5):
        self.recorder = recorder
        self.model_label = model_label
        self.random_weights = random_weights
        self.font_scale = font_scale
        self.fps = FpsMeter()

    def write_event(self, event: FaceEvent) -> None:
        pass  # the overlay shows tracks, which the frames carry

    def write_frame(self, result: FrameResult) -> None:
        latency_ms = (time.monotonic() - result.frame.timestamp) * 1000.0
        status = Status(self.fps.tick(), latency_ms, self.model_label, self.random_weights)
        self.recorder.write(draw(result, status, self.font_scale), result.frame.stream_time)  # stream clock → its rate

    def close(self) -> None:
        self.recorder.close()
