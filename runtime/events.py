"""The event thread: delivers FaceEvents to user callbacks (design.md, "Events" and the delivery rules).

- Perception only appends to a queue, so a slow callback never stalls it.
- The lifecycle events `appeared`, `attributes_ready` and `disappeared` are never dropped: the tracker's track
  cap bounds how many can be pending. `attribute_changed` is dropped (and counted) when `queue_size` events
  are already waiting, and pending `attribute_changed` events of one track are merged into one (first old
  label, newest new label).
- Whatever leaves a callback (an exception, SystemExit, KeyboardInterrupt) is logged with the callback's
  name and counted; the other callbacks still run and the thread carries on.
- At shutdown (`close`), pending events are delivered for up to `timeout` seconds (events.shutdown_timeout);
  the `attribute_changed` events still waiting then are dropped and counted, but the lifecycle events are
  delivered however long the callbacks take (at most: pending lifecycle events × the slowest callback).
  `abandon()` (a second Ctrl-C, `Pipeline.stop(force=True)`) ends that wait: what is left is counted as dropped.
- `close()` called on the event thread itself (a callback stopping the pipeline) returns at once: the
  thread that runs the pipeline closes the bus.

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
LIFECYCLE = (EventKind.APPEARED, EventKind.ATTRIBUTES_READY, EventKind.DISAPPEARED)


class EventBus:
    def __init__(self, queue_size: int = 256, latencies: LatencyRecorder | None = None,
                 tap: Callback | None = None):
        """`tap(event)` is called for every emitted event on the emitting thread, before merging or dropping
        (the pipeline's sinks, runtime.sinks, get every event in order with the frames)."""
        self.queue_size = queue_size
        self.tap = tap
        self.latencies = latencies or LatencyRecorder()
        self._callbacks: dict[EventKind, list[Callback]] = {kind: [] for kind in EventKind}
        self._queue: deque[list[FaceEvent | None]] = deque()  # one-element boxes, so a pending event can be merged
        self._pending_changed: dict[int, list[FaceEvent | None]] = {}  # track id → its box in the queue
        self._condition = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._delivering = False  # a callback is running (its event has left the queue)
        self._abandoned = False  # a plain flag: set from a signal handler, read by close()'s wait loop
        self.delivered = 0
        self.dropped = 0
        self.callback_errors = 0

    def on(self, kind: EventKind | str, callback: Callback) -> None:
        self._callbacks[EventKind(kind)].append(callback)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="facecue-events", daemon=True)
        self._thread.start()

    def emit(self, event: FaceEvent) -> None:
        """Queue an event for the callbacks; never blocks (the tap may apply a sink's back-pressure)."""
        if self.tap is not None:
            self.tap(event)
        with self._condition:
            if event.kind == EventKind.ATTRIBUTE_CHANGED and event.track_id in self._pending_changed:
                box = self._pending_changed[event.track_id]
                box[0] = _merge_changes(box[0], event)
                if box[0] is None:  # the label switched back before delivery: nothing changed
                    del self._pending_changed[event.track_id]
                return
            if event.kind not in LIFECYCLE and len(self._queue) >= self.queue_size:
                # counted here; lifecycle events never are dropped
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

    def on_own_thread(self) -> bool:
        """True when called from this object's thread (a callback or a sink)."""
        return self._thread is not None and self._thread is threading.current_thread()

    def abandon(self) -> None:
        """Make a running or later close() stop waiting for slow callbacks. Only sets a flag (signal-safe)."""
        self._abandoned = True

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is pending: everything for up to `timeout` seconds, then the lifecycle events however
        long they take (unless abandoned); then stop the thread. Called on the event thread itself: returns at once."""
        if self.on_own_thread():
            return  # a callback cannot wait for itself; the thread that started the pipeline closes it
        deadline = time.monotonic() + timeout
        with self._condition:
            self._wait(lambda: bool(self._queue) and time.monotonic() < deadline)
            changed = [box for box in self._queue if box[0] is not None and box[0].kind not in LIFECYCLE]
            if changed:
                self._queue = deque(box for box in self._queue if box[0] is None or box[0].kind in LIFECYCLE)
                self._pending_changed.clear()
                self.dropped += len(changed)
                log.warning("%d attribute_changed events not delivered within the %.1f s events.shutdown_timeout",
                            len(changed), timeout)
            if self._queue and not self._abandoned and self._alive():
                log.info("delivering %d lifecycle events still queued (slow callbacks)", len(self._queue))
            self._wait(lambda: bool(self._queue) or self._delivering)  # the last one too, to its end
            self._closing = True
            left = len(self._queue)
            self._queue.clear()
            self._pending_changed.clear()
            self._condition.notify_all()
        if left:
            self.dropped += left
            log.warning("%d lifecycle events were not delivered: %s", left,
                        "shutdown forced" if self._abandoned else "the event thread is not running")
        if self._thread is not None:
            self._thread.join(timeout=0.5 if self._abandoned else 2.0)
            if self._thread.is_alive():
                log.warning("a callback is still running at shutdown; not waiting for it")

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _wait(self, waiting) -> None:
        """With the condition held: wait while `waiting()` and the thread can still deliver."""
        while waiting() and self._alive() and not self._abandoned:
            self._condition.wait(timeout=0.05)

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
                self._delivering = True
            if event is not None:
                self._deliver(event)
            with self._condition:
                self._delivering = False
                self._condition.notify_all()  # wakes close() waiting for the queue to drain

    def _deliver(self, event: FaceEvent) -> None:
        started = time.monotonic()
        for callback in self._callbacks[event.kind]:
            try:
                callback(event)
            except BaseException as error:  # SystemExit and KeyboardInterrupt too: this thread must carry on
                self.callback_errors += 1
                log.error("the %s callback %s raised %s; the pipeline goes on", event.kind.value,
                          _name(callback), type(error).__name__, exc_info=error)
        finished = time.monotonic()
        self.delivered += 1
        self.latencies.add("callbacks", finished - started)
        self.latencies.add("end_to_end", started - event.timestamp)


def _name(callback: Callback) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)


def _merge_changes(pending: FaceEvent, newer: FaceEvent) -> FaceEvent | None:
    """One attribute_changed from two: the first old label, the newest new label and attributes;
    None when every label is back where it was."""
    changes = dict(pending.changes)
    for task, (old, new) in newer.changes.items():
        first_old = changes[task][0] if task in changes else old
        changes[task] = (first_old, new)
    changes = {task: (old, new) for task, (old, new) in changes.items() if old != new}
    return replace(newer, changes=changes) if changes else None
