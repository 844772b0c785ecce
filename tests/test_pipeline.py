"""The whole pipeline on a bundled clip in fast mode: real capture, MediaPipe, tracker, ONNX Runtime, threads."""
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.backends import open_backend
from runtime.capture import SourceError
from runtime.config import load_config
from runtime.pipeline import Pipeline
from runtime.policy import DUE, EARLY, Candidate, overdue, readiness, select
from runtime.types import Detection, EventKind, Track, TrackState
from helpers_faces import background, face_patches, render

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CLIP = SAMPLES / "face-demographics-walking-and-pause.mp4"  # 41 frames, up to 4 people


class RecordingBackend:
    """The real ONNX Runtime backend; records the shape of every batch the session receives."""

    def __init__(self, backend):
        self.backend, self.info, self.max_batch = backend, backend.info, backend.max_batch
        self.shapes: list[tuple] = []

    def run(self, images):
        self.shapes.append(images.shape)
        return self.backend.run(images)

    def close(self):
        self.backend.close()


def fast_config(model, source=CLIP, *overrides):
    return load_config(None, [f"source.uri={source}", "source.mode=fast", f"classifier.model={model}",
                              "classifier.intra_op_threads=1", "policy.interval=0.02", "policy.min_quality=0.0",
                              "events.min_observations=2", "events.shutdown_timeout=10.0", *overrides])


def test_fast_mode_run_with_a_real_model(tiny_model):
    config = fast_config(tiny_model)
    backend = RecordingBackend(open_backend(tiny_model, config.classifier))
    pipeline = Pipeline(config, backend=backend)
    events = []
    gate = threading.Event()

    def slow_appeared(event):  # holds the event thread until every frame has been processed
        gate.wait(20.0)
        events.append(event)

    def raising(event):
        events.append(event)
        raise RuntimeError("a user callback failed")

    pipeline.on("appeared", slow_appeared)
    pipeline.on(EventKind.ATTRIBUTES_READY, raising)
    pipeline.on("attribute_changed", events.append)
    pipeline.on("disappeared", events.append)
    pipeline.start(wait_for_model=True)
    results = []
    while not pipeline.finished:
        result = pipeline.results(timeout=0.1)
        if result is not None:
            results.append(result)
    assert not gate.is_set() and len(events) == 0  # perception finished while the first callback still slept
    gate.set()
    pipeline.close()
    assert pipeline.error is None

    # lossless: every frame of the clip, in order, captured after the model's warm-up
    assert [r.frame.index for r in results] == list(range(41))
    assert pipeline.classifier.warmed_at < results[0].frame.timestamp
    stats = pipeline.stats()
    assert stats.frames_processed == 41 and stats.frames_dropped == 0

    # every crop reached the model at the model's size, one batched run per round
    size = backend.info.input_size
    assert backend.shapes and all(shape[1:] == (size, size, 3) for shape in backend.shapes)
    assert backend.shapes[0][0] == 1  # the classifier's warm-up run
    assert sum(shape[0] for shape in backend.shapes[1:]) == stats.classifications > 0
    assert max(shape[0] for shape in backend.shapes) <= config.classifier.max_batch
    assert any(shape[0] > 1 for shape in backend.shapes)  # several faces went into one run

    # per track: appeared → attributes_ready → attribute_changed* → disappeared
    by_track = defaultdict(list)
    for event in events:
        by_track[event.track_id].append(event.kind)
    assert by_track
    for kinds in by_track.values():
        assert kinds[0] == EventKind.APPEARED and kinds[-1] == EventKind.DISAPPEARED
        assert kinds.count(EventKind.APPEARED) == 1 and kinds.count(EventKind.DISAPPEARED) == 1
        middle = kinds[1:-1]
        assert middle.count(EventKind.ATTRIBUTES_READY) <= 1
        assert set(middle[1:]) <= {EventKind.ATTRIBUTE_CHANGED}
        assert not middle or middle[0] == EventKind.ATTRIBUTES_READY
    ready = [e for e in events if e.kind == EventKind.ATTRIBUTES_READY]
    assert ready and stats.callback_errors == len(ready)
    for event in ready:
        assert set(event.attributes.tasks) == {"age", "gender", "emotion"}
        assert all(task.observations >= 2 for task in event.attributes.tasks.values())
        assert 1.5 <= event.attributes.age_years <= 77.0

    # each event carries the capture timestamp of a processed frame
    frame_times = {r.frame.timestamp for r in results}
    assert all(event.timestamp in frame_times for event in events)

    # confirmed tracks in the FrameResults carry attributes once classified
    confirmed = [t for r in results for t in r.tracks if t.track.state == TrackState.CONFIRMED]
    assert any(t.attributes.observations > 0 for t in confirmed)
    assert set(stats.stages) >= {"capture", "detect", "track", "crop", "infer", "smooth", "callbacks"}
    assert stats.end_to_end is not None and stats.end_to_end.count == stats.events_delivered


def test_without_a_model_detection_and_tracking_still_run(caplog):
    config = load_config(None, [f"source.uri={CLIP}", "source.mode=fast"])
    pipeline = Pipeline(config)
    appeared, disappeared = [], []
    pipeline.on("appeared", lambda e: appeared.append(e.track_id))
    pipeline.on("disappeared", lambda e: disappeared.append(e.track_id))
    frames = []
    with caplog.at_level("WARNING"):
        pipeline.run(lambda result: frames.append(result))
    assert "no model given" in caplog.text and "python -m export" in caplog.text
    assert len(frames) == 41 and any(r.tracks for r in frames)
    assert appeared and sorted(appeared) == sorted(disappeared)
    assert pipeline.stats().classifications == 0


def test_stopping_early_still_pairs_every_appeared(tiny_model):
    pipeline = Pipeline(fast_config(tiny_model))
    appeared, disappeared = [], []
    pipeline.on("appeared", lambda e: appeared.append(e.track_id))
    pipeline.on("disappeared", lambda e: disappeared.append(e.track_id))
    pipeline.run(lambda result: result.frame.index < 15)  # stop in the middle of the clip
    assert appeared and sorted(appeared) == sorted(disappeared)
    assert pipeline.stats().frames_processed < 41


def test_an_unreadable_source_is_named(tmp_path):
    pipeline = Pipeline(load_config(None, [f"source.uri={tmp_path / 'missing.mp4'}"]))
    with pytest.raises(SourceError, match="missing.mp4"):
        pipeline.start()
    pipeline.stop()


def track(track_id, last_classified=None, state=TrackState.CONFIRMED, matched=True):
    detection = Detection((0.0, 0.0, 50.0, 50.0), 0.9, np.zeros((6, 2))) if matched else None
    return Track(track_id, (0.0, 0.0, 50.0, 50.0), detection, 5, 0, state, last_classified)


def test_policy_readiness():
    now, interval, fill = 10.0, 1.0, 0.5
    assert readiness(track(1), now, interval, fill, set()) == DUE  # never classified
    assert readiness(track(1, 8.9), now, interval, fill, set()) == DUE
    assert readiness(track(1, 9.4), now, interval, fill, set()) == EARLY
    assert readiness(track(1, 9.8), now, interval, fill, set()) is None
    assert readiness(track(1), now, interval, fill, {1}) is None  # a request is in flight
    assert readiness(track(1, state=TrackState.TENTATIVE), now, interval, fill, set()) is None
    assert readiness(track(1, matched=False), now, interval, fill, set()) is None  # no crop in this frame


def test_policy_selection_order_quality_gate_and_capacity():
    new_poor = Candidate(track(1), 0.05, DUE)
    old_good = Candidate(track(2, 5.0), 0.9, DUE)
    old_fair = Candidate(track(3, 5.0), 0.5, DUE)
    old_poor = Candidate(track(4, 5.0), 0.1, DUE)
    early = Candidate(track(5, 9.4), 0.8, EARLY)
    chosen = select([old_fair, old_poor, early, old_good, new_poor], capacity=8, max_batch=8, min_quality=0.3)
    # never classified first (even when poor), then best quality; the poor classified crop waits; early fills
    assert [c.track.id for c in chosen.chosen] == [1, 2, 3, 5]
    assert chosen.waiting == 1 and chosen.deferred == 0
    full = select([old_fair, early, old_good, new_poor], capacity=2, max_batch=8, min_quality=0.3)
    assert [c.track.id for c in full.chosen] == [1, 2] and full.deferred == 1
    alone = select([early], capacity=8, max_batch=8, min_quality=0.3)
    assert alone.chosen == []  # early tracks only ride along with a due one
    waited = Candidate(track(4, 5.0), 0.1, DUE, overdue=True)
    assert [c.track.id for c in select([waited], 8, 8, 0.3).chosen] == [4]  # waited long enough: taken as is
    assert overdue(track(4, 5.0), now=10.0, interval=1.0, max_quality_wait=4.0)
    assert not overdue(track(4, 5.0), now=9.9, interval=1.0, max_quality_wait=4.0)
    assert not overdue(track(4), now=10.0, interval=1.0, max_quality_wait=4.0)


def test_a_looping_file_starts_its_next_pass_and_frames_keep_flowing():
    # source.loop makes the file a live source; the end of a pass is not a failure: no reopen, no delay
    config = load_config(None, [f"source.uri={CLIP}", "source.mode=fast", "source.loop=true",
                                "source.reopen_initial_delay=5.0"])
    pipeline = Pipeline(config)
    indices = []
    pipeline.run(lambda result: indices.append(result.frame.index) or len(indices) < 100)
    stats = pipeline.stats()
    assert indices == list(range(100)) and stats.source_reopens == 0 and pipeline.error is None
    assert stats.duration_s < 5.0


def write_clip(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_offline_tracks_follow_the_clip_clock_not_the_consumer_speed(tmp_path):
    # A real face walks over a real background at 30 fps, vanishes for 8 frames (0.27 s of the clip: a
    # lost spell, shorter than remove_after) and comes back, then leaves for good (0.67 s: removed).
    # On the wall clock a slowed caller would stretch the first gap past remove_after and split the track.
    fps, patch, base = 30.0, face_patches(96)[0], background(320, 240)
    visible = [i < 15 or 23 <= i < 35 for i in range(55)]
    frames = [render([patch], [(90.0 + 3.0 * i, 120.0)], base) if seen else base.copy()
              for i, seen in enumerate(visible)]
    clip = write_clip(tmp_path / "gap.mp4", frames, fps)
    overrides = [f"source.uri={clip}", "source.mode=fast", "tracker.confirm_hits=3",
                 "tracker.lost_after=0.1", "tracker.remove_after=0.4",
                 "detector.min_face_size=30"]  # the rocket background has one 13-px false face

    def run(delay: float):
        pipeline = Pipeline(load_config(None, overrides))
        events, per_frame = [], []
        pipeline.on("appeared", lambda e: events.append(("appeared", e.track_id, round(e.media_time, 3))))
        pipeline.on("disappeared", lambda e: events.append(("disappeared", e.track_id, round(e.media_time, 3))))

        def consume(result):
            per_frame.append([(t.track.id, t.track.state.value) for t in result.tracks])
            time.sleep(delay)  # a slow caller holds back perception: fast mode is lossless

        pipeline.run(consume)
        assert pipeline.error is None and len(per_frame) == len(frames)
        return events, per_frame

    fast_events, fast_frames = run(0.0)
    slow_events, slow_frames = run(0.06)  # the 8-frame gap lasts ~0.5 s of wall time: > remove_after
    assert slow_events == fast_events and slow_frames == fast_frames
    # one track, lost during the gap, removed 0.4 s of clip time after it was last seen (frame 34)
    assert [(kind, track_id) for kind, track_id, _ in fast_events] == [("appeared", 1), ("disappeared", 1)]
    assert fast_events[1][2] == pytest.approx(34 / fps + 0.4, abs=1.01 / fps)
    assert any(state == "lost" for tracks in fast_frames[15:23] for _, state in tracks)


def test_perception_nice_lowers_only_the_perception_thread():
    config = load_config(None, [f"source.uri={CLIP}", "source.mode=fast", "classifier.perception_nice=3"])
    pipeline = Pipeline(config)
    seen = []

    def check(result):
        seen.append(os.getpriority(os.PRIO_PROCESS, pipeline._thread.native_id))
        return False  # one frame is enough

    pipeline.run(check)
    assert seen == [os.getpriority(os.PRIO_PROCESS, 0) + 3]  # the caller's thread keeps its own priority


class SlowBackend(RecordingBackend):
    """The real ONNX Runtime backend, with every run held back: a classifier on a much slower CPU."""

    def __init__(self, backend, delay: float):
        super().__init__(backend)
        self.delay = delay

    def run(self, images):
        time.sleep(self.delay)
        return super().run(images)


def record_events(pipeline):
    events = []
    for kind in EventKind:
        pipeline.on(kind, events.append)
    return events


def labels(event):
    return tuple(sorted((task, value.label) for task, value in event.attributes.tasks.items()))


def test_synchronous_offline_scoring_does_not_depend_on_the_classifier_speed(tiny_model):
    def run(delay: float):
        config = fast_config(tiny_model, CLIP, "classifier.synchronous=true", "policy.interval=0.5")
        backend = SlowBackend(open_backend(tiny_model, config.classifier), delay)
        pipeline = Pipeline(config, backend=backend)
        events = record_events(pipeline)
        frames = []
        pipeline.run(lambda result: frames.append([(t.track.id, labels(t), t.attributes.observations)
                                                   for t in result.tracks]))
        assert pipeline.error is None and len(frames) == 41
        return [(e.kind, e.track_id, round(e.media_time, 4), labels(e)) for e in events], frames, backend.shapes

    quick_events, quick_frames, quick_batches = run(0.0)
    slow_events, slow_frames, slow_batches = run(0.2)  # 0.2 s per run: far slower than a frame
    assert slow_events == quick_events and slow_frames == quick_frames
    assert slow_batches == quick_batches  # the same crops in the same batches: one run per frame's round
    kinds = [kind for kind, *_ in quick_events]
    assert EventKind.ATTRIBUTES_READY in kinds and kinds.count(EventKind.APPEARED) == kinds.count(EventKind.DISAPPEARED)
    assert any(observations > 0 for tracks in quick_frames for _, _, observations in tracks)


def test_crops_in_flight_at_the_end_of_the_stream_are_folded_in_before_disappeared(tiny_model):
    # asynchronous: a 0.2 s classifier lags far behind the fast run, which ends with crops still being classified
    config = fast_config(tiny_model, CLIP, "events.min_observations=1")
    backend = SlowBackend(open_backend(tiny_model, config.classifier), 0.2)
    pipeline = Pipeline(config, backend=backend)
    events = record_events(pipeline)
    pipeline.run(wait_for_model=True)
    assert pipeline.error is None
    stats = pipeline.stats()
    gone = {e.track_id: e for e in events if e.kind == EventKind.DISAPPEARED}
    assert gone and set(gone) == {e.track_id for e in events if e.kind == EventKind.APPEARED}
    # every crop the model classified reached its track's smoother, and every track got its readings
    assert sum(e.attributes.observations for e in gone.values()) == stats.classifications > 0
    assert all(e.attributes.observations > 0 for e in gone.values())
    for track_id, event in gone.items():
        kinds = [e.kind for e in events if e.track_id == track_id]
        assert kinds.index(EventKind.ATTRIBUTES_READY) < kinds.index(EventKind.DISAPPEARED) == len(kinds) - 1
