"""Tracking through occlusion, re-entry, leaving the image and cuts, on real faces over real backgrounds.

Frames are made at test time: real face chips (tests/helpers_faces.py, scripts/track_scenes.py) pasted
over `skimage.data.rocket()` / `coffee()` along known paths, then the real MediaPipe detector.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from helpers_faces import background, face_patches, render
from runtime.appearance import describe, distance, with_appearance
from runtime.cuts import CutDetector
from runtime.detector import FaceDetector
from runtime.track_eval import evaluate
from runtime.tracker import FaceTracker
from runtime.types import Detection, TrackState

ROOT = Path(__file__).resolve().parent.parent
FPS = 30.0


def _load_scenes():
    spec = importlib.util.spec_from_file_location("track_scenes", ROOT / "scripts" / "track_scenes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["track_scenes"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def detector():
    with FaceDetector("full_range", running_mode="image") as found:
        yield found


def track(detector, frames: list[np.ndarray], tracker: FaceTracker | None = None):
    tracker = tracker or FaceTracker()
    updates = []
    for index, rgb in enumerate(frames):
        found = with_appearance(rgb, detector.detect(rgb))
        updates.append(tracker.update(found, index / FPS, (rgb.shape[1], rgb.shape[0])))
    return updates


def ids_near(update, center, radius=40.0) -> list[int]:
    return [t.id for t in update.tracks if t.state == TrackState.CONFIRMED and t.detected
            and np.hypot((t.box[0] + t.box[2]) / 2 - center[0], (t.box[1] + t.box[3]) / 2 - center[1]) < radius]


def test_descriptors_separate_real_faces():
    patches = face_patches(128)
    box = (28.0, 40.0, 100.0, 112.0)  # the face in the middle of a patch, hair above it
    same = [distance(describe(p, box), describe(p, (b[0] + 4, b[1] + 3, b[2] + 4, b[3] + 3)))
            for p, b in zip(patches, [box] * 3)]
    different = [distance(describe(a, box), describe(b, box)) for i, a in enumerate(patches) for b in patches[i + 1:]]
    assert max(same) < min(different)
    assert describe(patches[0], (500.0, 500.0, 600.0, 600.0)) is None  # off the image


def test_a_face_hidden_behind_another_for_1_5_s_gets_its_id_back(detector):
    woman, man = face_patches(110)[1:]
    base = background()
    frames, paths = [], []
    for index in range(150):  # 5 s; the walker is hidden behind the standing face for about 1.5 s
        walker = (80.0 + 3.0 * index, 240.0)
        frames.append(render([woman, man], [walker, (320.0, 242.0)], base))  # man stands in front
        paths.append(walker)
    updates = track(detector, frames)
    hidden = [i for i, p in enumerate(paths) if abs(p[0] - 320.0) < 90]
    assert len(hidden) / FPS > 1.2 and len(hidden) / FPS > FaceTracker().association.max_prediction
    before = {i for u, p in zip(updates[10:40], paths[10:40]) for i in ids_near(u, p)}
    after = {i for u, p in zip(updates[-20:], paths[-20:]) for i in ids_near(u, p)}
    assert len(before) == 1 and after == before
    assert not any(u.disappeared for u in updates)


def test_a_face_leaving_the_image_is_held_inside_as_lost_and_comes_back_with_its_id(detector):
    woman = face_patches(110)[1]
    base = background()
    xs = list(np.linspace(400.0, 760.0, 36)) + [760.0] * 15 + list(np.linspace(760.0, 450.0, 36))  # out ~1 s
    frames = [render([woman], [(x, 240.0)], base) for x in xs]
    updates = track(detector, frames)
    for update in updates:
        for t in update.tracks:
            x1, y1, x2, y2 = t.box
            assert 0 <= x1 <= x2 <= 640 and 0 <= y1 <= y2 <= 480, "a box outside the image"
    outside = [u for u, x in zip(updates, xs) if x - 55 > 640]
    assert outside and all(t.state == TrackState.LOST and not t.detected for u in outside for t in u.tracks)
    first = {t.id for t in updates[5].tracks if t.state == TrackState.CONFIRMED}
    last = {t.id for t in updates[-1].tracks if t.state == TrackState.CONFIRMED}
    assert len(first) == 1 and last == first


def test_cut_detector_fires_at_a_cut_and_not_on_a_pan_or_a_dimming():
    wide = cv2.resize(data.rocket(), (1600, 480))
    pan = [wide[:, x:x + 640] for x in range(0, 960, 12)]
    dimming = [np.clip(pan[0] * f, 0, 255).astype(np.uint8) for f in np.linspace(1.0, 0.5, 15)]
    cut = [background(), cv2.resize(data.coffee(), (640, 480))]
    threshold = 0.21  # the default, TrackerConfig.cut_threshold
    for sequence, cuts in ((pan, 0), (dimming, 0), (cut, 1)):
        detector = CutDetector(threshold)
        assert sum(detector.is_cut(frame) for frame in sequence) == cuts
    assert not any(CutDetector(0.0).is_cut(frame) for frame in cut)  # 0 turns it off


def _face(x, y=100.0, side=60.0) -> Detection:
    return Detection(box=(x, y, x + side, y + side), score=0.9, keypoints=np.zeros((6, 2), np.float32))


def test_a_stale_track_is_removed_before_association():
    tracker = FaceTracker(confirm_hits=1, lost_after=0.2, remove_after=1.0)
    tracker.update([_face(100)], 0.0)
    update = tracker.update([_face(102)], 1.5)  # someone stands there after a 1.5 s gap
    assert [t.id for t in update.disappeared] == [1]
    assert [t.id for t in update.tracks] == [2]


def test_an_undetected_track_is_confirmed_then_lost_and_reports_detected():
    tracker = FaceTracker(confirm_hits=1, lost_after=0.2, remove_after=1.0)
    assert tracker.update([_face(100)], 0.0).tracks[0].detected
    short = tracker.update([], 0.1).tracks[0]
    assert short.state == TrackState.CONFIRMED and not short.detected
    assert tracker.update([], 0.3).tracks[0].state == TrackState.LOST


def _run_clip(tmp_path: Path, detector, name: str, fps: float = 15.0, overrides=()) -> tuple[Path, dict]:
    scenes = _load_scenes()
    if not (tmp_path / name / "truth.json").exists():
        scene = scenes.build(name, scenes.default_faces(), data.rocket(), data.coffee(), detector)
        scenes.write(scene, tmp_path / name, fps)
    truth = json.loads((tmp_path / name / "truth.json").read_text())
    jsonl = tmp_path / name / f"run{len(overrides)}.jsonl"
    sets = [arg for item in overrides for arg in ("--set", item)]
    result = subprocess.run([sys.executable, "-m", "runtime.run", "--source", str(tmp_path / name / "clip.mp4"),
                             "--mode", "fast", "--headless", "--jsonl", str(jsonl), "--log-level", "WARNING", *sets],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return jsonl, truth


@pytest.mark.slow
def test_no_id_crosses_a_cut_and_frame_lines_report_state_and_detected(tmp_path, detector):
    jsonl, truth = _run_clip(tmp_path, detector, "cut")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    frames = {r["index"]: r["tracks"] for r in records if r["type"] == "frame"}
    cut = truth["cuts"][0]
    before = {t["id"] for i, ts in frames.items() if i < cut for t in ts}
    after = {t["id"] for i, ts in frames.items() if i >= cut for t in ts}
    assert len(before) >= 3 and len(after) >= 3 and not before & after  # (the rocket may add a false face)
    ended = [r for r in records if r["type"] == "event" and r["event"] == "disappeared"]
    assert sorted(r["track_id"] for r in ended if r["reason"] == "cut") == sorted(before)
    assert all(r["media_time"] == pytest.approx(cut / truth["fps"], abs=1e-3) for r in ended if r["reason"] == "cut")
    tracks = [t for ts in frames.values() for t in ts]
    assert {t["state"] for t in tracks} <= {"confirmed", "lost"}  # tentative ones are left out by default
    assert all(isinstance(t["detected"], bool) for t in tracks) and any(t["detected"] for t in tracks)
    metrics = evaluate(truth, frames)
    assert metrics["ids_across_cuts"] == 0 and metrics["boxes_outside"] == 0 and metrics["coverage"] > 0.9

    out = subprocess.run([sys.executable, "-m", "runtime.track_eval", "--truth", str(tmp_path / "cut" / "truth.json"),
                          "--jsonl", str(jsonl)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout.splitlines()[-1]) == metrics
    bad = subprocess.run([sys.executable, "-m", "runtime.track_eval", "--truth", str(jsonl), "--jsonl", str(jsonl)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "error:" in bad.stderr

    # the options: tentative tracks reported, cut detection off
    jsonl, _ = _run_clip(tmp_path, detector, "cut", overrides=("tracker.report_tentative=true", "tracker.cut_threshold=0"))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert any(t["state"] == "tentative" for r in records if r["type"] == "frame" for t in r["tracks"])
    assert not any(r.get("reason") == "cut" for r in records if r["type"] == "event")


def test_cut_threshold_out_of_range_is_named():
    from runtime.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="tracker.cut_threshold"):
        load_config(None, ["tracker.cut_threshold=1.5"])


def test_track_eval_counts_switches_fragmentations_and_cut_crossings():
    box = lambda x: [x, 100.0, x + 60.0, 160.0]  # noqa: E731
    truth = {"size": [640, 480], "cuts": [4], "frames": [
        {"index": i, "faces": [{"id": 0, "box": box(100 + i), "visible": 1.0}]} for i in range(6)]}
    tracks = {0: [{"id": 1, "box": box(100), "state": "confirmed"}],
              1: [{"id": 1, "box": box(101), "state": "lost"}],  # lost: no claim, so an interruption
              2: [{"id": 2, "box": box(102), "state": "confirmed"}, {"id": 3, "box": box(400), "state": "confirmed"}],
              3: [{"id": 2, "box": box(103), "state": "confirmed"}],
              4: [{"id": 2, "box": [630.0, 100.0, 700.0, 160.0], "state": "confirmed"}],  # outside, after the cut
              5: [{"id": 4, "box": box(105), "state": "confirmed"}]}
    metrics = evaluate(truth, tracks)
    assert metrics["coverage"] == pytest.approx(4 / 6, abs=1e-3)
    assert (metrics["id_switches"], metrics["fragmentations"], metrics["false_positives"]) == (2, 2, 2)
    assert (metrics["ids_across_cuts"], metrics["boxes_outside"]) == (1, 1)


def test_four_people_crossing_occluding_and_reentering_keep_their_ids(detector):
    scenes = _load_scenes()
    scene = scenes.build("crossing", scenes.default_faces(), data.rocket(), data.coffee(), detector)
    fps = 15.0
    truth = {"size": list(scenes.SIZE), "cuts": [], "frames": []}
    tracker, reported = FaceTracker(), {}
    for index, rgb, faces, _ in scenes.frames(scene, fps):
        truth["frames"].append({"index": index, "faces": faces})
        found = with_appearance(rgb, detector.detect(rgb))
        update = tracker.update(found, index / fps, (rgb.shape[1], rgb.shape[0]))
        reported[index] = [{"id": t.id, "box": list(t.box), "state": t.state.value}
                           for t in update.tracks if t.state != TrackState.TENTATIVE]
    metrics = evaluate(truth, reported)
    assert metrics["id_switches"] <= 1 and metrics["coverage"] >= 0.9 and metrics["boxes_outside"] == 0


def test_no_false_cut_inside_the_sample_clips_and_a_cut_where_two_are_joined():
    from helpers_faces import SAMPLES

    clips = []
    for path in sorted(SAMPLES.glob("*.mp4")):
        video, frames = cv2.VideoCapture(str(path)), []
        while len(frames) < 40:
            ok, frame = video.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        video.release()
        clips.append(frames)
    assert len(clips) >= 3
    for frames in clips:  # people walking, turning their heads
        detector = CutDetector(0.21)
        assert not any(detector.is_cut(frame) for frame in frames)
    for first, second in zip(clips, clips[1:]):
        detector = CutDetector(0.21)
        detector.is_cut(first[-1])
        assert detector.is_cut(second[0])


def test_a_new_track_next_to_a_lost_one_with_its_colours_continues_it():
    colours = np.zeros((64,), np.float32)
    colours[5] = 1.0
    seen = lambda x: Detection((x, 100.0, x + 60.0, 160.0), 0.9, np.zeros((6, 2), np.float32), colours)  # noqa: E731
    tracker = FaceTracker(confirm_hits=2, lost_after=0.1, remove_after=2.0)
    for index in range(3):
        tracker.update([seen(100.0)], index * 0.1)
    tracker.update([], 0.5)  # lost, held still (no motion)
    for index, t in enumerate((1.0, 1.1, 1.2)):  # comes back 2 face sizes away: beyond the normal gate
        update = tracker.update([seen(220.0 + index)], t)
    assert [(tr.id, tr.state, tr.detected) for tr in update.tracks] == [(1, TrackState.CONFIRMED, True)]
    assert not update.appeared
