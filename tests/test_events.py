"""Event delivery rules (design.md, "Threads and queues"): isolation, never stalling, merging, no lifecycle drops."""
import logging
import threading
import time

from runtime.events import EventBus
from runtime.types import Attributes, EventKind, FaceEvent


def event(kind, track_id=1, changes=None):
    return FaceEvent(EventKind(kind), track_id, time.monotonic(), (0.0, 0.0, 10.0, 10.0), Attributes(), changes or {})


def test_a_raising_callback_is_logged_and_the_others_still_run(caplog):
    bus = EventBus()
    seen = []
    bus.on("appeared", lambda e: 1 / 0)
    bus.on("appeared", lambda e: seen.append(e.track_id))
    bus.start()
    with caplog.at_level(logging.ERROR):
        bus.emit(event("appeared", 1))
        bus.emit(event("appeared", 2))
        bus.close(timeout=2.0)
    assert seen == [1, 2]
    assert bus.callback_errors == 2 and bus.delivered == 2
    assert "<locals>.<lambda> raised ZeroDivisionError" in caplog.text and "the appeared callback" in caplog.text


def test_a_sleeping_callback_does_not_stall_the_emitter():
    bus = EventBus(queue_size=4)
    release = threading.Event()
    seen = []
    bus.on("appeared", lambda e: (release.wait(5.0), seen.append(e.track_id)))
    bus.on("disappeared", lambda e: seen.append(-e.track_id))
    bus.start()
    started = time.monotonic()
    for track_id in range(1, 51):  # far more than queue_size: lifecycle events are never dropped
        bus.emit(event("appeared", track_id))
        bus.emit(event("attribute_changed", track_id, {"emotion": ("Happy", "Sad")}))
        bus.emit(event("disappeared", track_id))
    assert time.monotonic() - started < 0.5  # perception would have gone on
    release.set()
    bus.close(timeout=5.0)
    assert seen == [x for track_id in range(1, 51) for x in (track_id, -track_id)]
    assert bus.dropped > 0  # attribute events beyond the queue size were dropped and counted


def test_pending_attribute_changes_of_one_track_are_merged():
    bus = EventBus()
    gate = threading.Event()
    delivered = []
    bus.on("appeared", lambda e: gate.wait(5.0))
    bus.on("attribute_changed", lambda e: delivered.append((e.track_id, e.changes)))
    bus.start()
    bus.emit(event("appeared", 1))  # holds the event thread until the changes are queued
    bus.emit(event("attribute_changed", 1, {"emotion": ("Happy", "Sad")}))
    bus.emit(event("attribute_changed", 2, {"emotion": ("Neutral", "Happy")}))
    bus.emit(event("attribute_changed", 1, {"emotion": ("Sad", "Angry"), "gender": ("Male", "Female")}))
    bus.emit(event("attribute_changed", 2, {"emotion": ("Happy", "Neutral")}))  # back where it was: nothing to say
    gate.set()
    bus.close(timeout=2.0)
    assert delivered == [(1, {"emotion": ("Happy", "Angry"), "gender": ("Male", "Female")})]


def test_shutdown_drops_attribute_changes_after_the_timeout_and_counts_them():
    bus = EventBus()
    bus.on("attribute_changed", lambda e: time.sleep(0.3))
    bus.start()
    for track_id in range(10):
        bus.emit(event("attribute_changed", track_id, {"emotion": ("Happy", "Sad")}))
    started = time.monotonic()
    bus.close(timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert 1 <= bus.delivered < 10 and bus.delivered + bus.dropped == 10


def test_shutdown_delivers_every_lifecycle_event_however_slow_the_callback():
    bus = EventBus()
    seen = []
    bus.on("disappeared", lambda e: (time.sleep(0.3), seen.append(e.track_id)))
    bus.start()
    for track_id in range(5):
        bus.emit(event("disappeared", track_id))
    started = time.monotonic()
    bus.close(timeout=0.1)  # shutdown_timeout bounds attribute_changed only
    assert seen == list(range(5)) and bus.dropped == 0
    assert 1.0 < time.monotonic() - started < 5.0  # slower, not lossy


def test_abandon_ends_the_wait_for_a_stuck_callback():
    bus = EventBus()
    release = threading.Event()
    bus.on("appeared", lambda e: release.wait(10.0))
    bus.start()
    for track_id in range(3):
        bus.emit(event("appeared", track_id))
    threading.Timer(0.3, bus.abandon).start()  # what a second Ctrl-C does
    started = time.monotonic()
    bus.close(timeout=0.1)
    assert time.monotonic() - started < 2.0 and bus.dropped == 2
    release.set()


def test_latency_is_measured_from_the_frame_timestamp():
    bus = EventBus()
    bus.on("appeared", lambda e: None)
    bus.start()
    bus.emit(FaceEvent(EventKind.APPEARED, 1, time.monotonic() - 0.2, (0, 0, 1, 1), Attributes()))
    bus.close(timeout=2.0)
    summary = bus.latencies.summary("end_to_end")
    assert summary.count == 1 and 200.0 <= summary.p50_ms < 5000.0
