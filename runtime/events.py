"""The event thread: delivers FaceEvents to user callbacks (design.md, "Events" and the delivery rules).

- Perception only appends to a queue, so a slow callback never stalls it.
- `appeared` and `disappeared` are never dropped: the tracker's track cap bounds how many can be
  pending. Attribute events are dropped (and counted) when `queue_size` events are already waiting.
- Pending `attribute_changed` events of one track are merged into one (first old label, newest new label).
- A callback that raises is logged and the others still run.
- At shutdown, pending events are delivered within a timeout; what is left is counted as dropped.

Hand-written rather than `queue.Queue`: merging a pending event in place needs access to the queue.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from runtime.stats import LatencyRecorder
from runtime.types import EventKind, FaceEvent

log = logging.getLogger(__name__)

Callback = Callable[[FaceEvent], None]
LIFECYCLE = (EventKind.APPEARED, EventKind.DISAPPEARED)


class EventBus:
    def __init__(self, queue_size: int = 256, latencies: LatencyRecorder | None = None):
        self.queue_size = queue_size
        self.latencies = latencies or LatencyRecorder()
        self._callbacks: dict[EventKind, list[Callback]] = {kind: [] for kind in EventKind}
        self._queue: deque[list[FaceEvent | None]] = deque()  # one-element boxes, so a pending event can be merged
        self._pending_changed: dict[int, list[FaceEvent | None]] = {}  # track id → its box in the queue
        self._condition = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.dropped = 0
        self.callback_errors = 0

    def on(self, kind: EventKind | str, callback: Callback) -> None:
        self._callbacks[EventKind(kind)].append(callback)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="facecue-events", daemon=True)
        self._thread.start()

    def emit(self, event: FaceEvent) -> None:
        """Queue an event for the callbacks; never blocks."""
        with self._condition:
            if event.kind == EventKind.ATTRIBUTE_CHANGED and event.track_id in self._pending_changed:
                box = self._pending_changed[event.track_id]
                box[0] = _merge_changes(box[0], event)
                if box[0] is None:  # the label switched back before delivery: nothing changed
                    del self._pending_changed[event.track_id]
                return
            if event.kind not in LIFECYCLE and len(self._queue) >= self.queue_size:
                self.dropped += 1
                return
            box = [event]
            self._queue.append(box)
            if event.kind == EventKind.ATTRIBUTE_CHANGED:
                self._pending_changed[event.track_id] = box
            self._condition.notify()

    def pending(self) -> int:
        with self._condition:
            return len(self._queue)

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is pending within `timeout` seconds, then stop the thread."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._queue and self._thread is not None and time.monotonic() < deadline:
                self._condition.wait(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
            self._closing = True
            left = len(self._queue)
            self._queue.clear()
            self._pending_changed.clear()
            self._condition.notify_all()
        if left:
            self.dropped += left
            log.warning("%d events were not delivered within the %.1f s shutdown timeout", left, timeout)
        if self._thread is not None:
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("a callback is still running after the shutdown timeout; not waiting for it")

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if self._closing:
                    return
                box = self._queue.popleft()
                event = box[0]
                if event is not None and self._pending_changed.get(event.track_id) is box:
                    del self._pending_changed[event.track_id]
            if event is not None:
                self._deliver(event)
            with self._condition:
                self._condition.notify_all()  # wakes close() waiting for the queue to drain

    def _deliver(self, event: FaceEvent) -> None:
        started = time.monotonic()
        for callback in self._callbacks[event.kind]:
            try:
                callback(event)
            except Exception:
                self.callback_errors += 1
                log.exception("a %s callback raised; the pipeline goes on", event.kind.value)
        finished = time.monotonic()
        self.delivered += 1
        self.latencies.add("callbacks", finished - started)
        self.latencies.add("end_to_end", started - event.timestamp)


def _merge_changes(pending: FaceEvent, newer: FaceEvent) -> FaceEvent | None:
    """One attribute_changed from two: the first old label, the newest new label and attributes;
    None when every label is back where it was."""
    changes = dict(pending.changes)
    for task, (old, new) in newer.changes.items():
        first_old = changes[task][0] if task in changes else old
        changes[task] = (first_old, new)
    changes = {task: (old, new) for task, (old, new) in changes.items() if old != new}
    return replace(newer, changes=changes) if changes else None
