"""Tracking benchmark: facecue's tracker (today's and git main's) and supervision's ByteTrack on the SAME
detections of ground-truth clips, scored by runtime/track_eval.py.

    python scripts/bench_tracking.py --clips build/tracks/crossing build/tracks/cut ... [--json build/bench_tracking.json]

Each clip folder holds clip.mp4 and truth.json (scripts/make_group_clip.py --scenario). The full-range
detector runs once per frame, as perception runs it; then each tracker sees those detections:
- `facecue`: runtime.tracker with appearance descriptors, the cut detector and clipping, reporting as the
  JSONL does (tentative tracks left out);
- `main`: the tracker of git `--baseline` (default main) as it was, every track reported (as its JSONL did);
- `bytetrack`: supervision.ByteTrack(frame_rate=clip fps), its output tracks;
- `detections`: the raw detections (their coverage is the detector's recall, the ceiling for every tracker).
Also the time facecue's tracking takes per frame (appearance descriptors + cut check + update; the mean over
the clip, best of 3 runs, since the machine is shared).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from runtime.appearance import with_appearance  # noqa: E402
from runtime.cuts import CutDetector  # noqa: E402
from runtime.detector import FaceDetector  # noqa: E402
from runtime.track_eval import evaluate, table  # noqa: E402
from runtime.tracker import FaceTracker  # noqa: E402
from runtime.types import TrackState  # noqa: E402


def detect(clip: Path) -> tuple[list, list[np.ndarray]]:
    video, detections, images = cv2.VideoCapture(str(clip)), [], []
    fps = video.get(cv2.CAP_PROP_FPS) or 30.0
    with FaceDetector("full_range") as detector:
        while True:
            ok, frame = video.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            detections.append(detector.detect(rgb, len(images) / fps))
            images.append(rgb)
    return detections, images


def run_facecue(detections, images, fps, repeats: int = 3) -> tuple[dict, float]:
    """The reported tracks per frame, and the seconds per frame of tracking (best of `repeats` runs)."""
    best = float("inf")
    for _ in range(repeats):
        tracker, cuts, out, spent = FaceTracker(), CutDetector(0.21), {}, 0.0
        for index, (found, rgb) in enumerate(zip(detections, images)):
            started = time.perf_counter()
            if cuts.is_cut(rgb):
                tracker.close_all()
            update = tracker.update(with_appearance(rgb, found), index / fps, (rgb.shape[1], rgb.shape[0]))
            spent += time.perf_counter() - started
            out[index] = [{"id": t.id, "box": list(t.box), "state": t.state.value}
                          for t in update.tracks if t.state != TrackState.TENTATIVE]
        best = min(best, spent / max(1, len(images)))
    return out, best


def load_baseline(commit: str):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:runtime/tracker.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "tracker_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("tracker_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["tracker_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.FaceTracker


def run_baseline(tracker_class, detections, fps) -> dict:
    tracker, out = tracker_class(), {}
    for index, found in enumerate(detections):
        update = tracker.update(found, index / fps)
        out[index] = [{"id": t.id, "box": list(t.box), "state": t.state.value} for t in update.tracks]
    return out


def run_bytetrack(detections, fps) -> dict:
    import supervision as sv

    tracker, out = sv.ByteTrack(frame_rate=int(round(fps))), {}
    for index, found in enumerate(detections):
        xyxy = np.array([d.box for d in found], np.float32).reshape(-1, 4)
        tracked = tracker.update_with_detections(sv.Detections(
            xyxy=xyxy, confidence=np.array([d.score for d in found], np.float32), class_id=np.zeros(len(found), int)))
        out[index] = [{"id": int(i), "box": [float(v) for v in box], "state": "confirmed"}
                      for box, i in zip(tracked.xyxy, tracked.tracker_id)]
    return out


def timing(truth: dict, images: list[np.ndarray], baseline_class, repeats: int = 5) -> dict:
    """ms per frame with every truth face as a detection (10 faces on the `ten` clip): facecue's tracking
    (appearance + cut check + update) and git main's update alone, interleaved, best of `repeats`."""
    from runtime.types import Detection

    fps = truth["fps"]
    frames = [[Detection(tuple(f["box"]), 0.9, np.zeros((6, 2), np.float32)) for f in frame["faces"]]
              for frame in truth["frames"]]
    best = {"facecue": float("inf"), "main": float("inf")}
    for _ in range(repeats):
        tracker, cuts, started = FaceTracker(), CutDetector(0.21), time.perf_counter()
        for index, (found, rgb) in enumerate(zip(frames, images)):
            cuts.is_cut(rgb)
            tracker.update(with_appearance(rgb, found), index / fps, (rgb.shape[1], rgb.shape[0]))
        best["facecue"] = min(best["facecue"], (time.perf_counter() - started) / len(frames))
        tracker, started = baseline_class(), time.perf_counter()
        for index, found in enumerate(frames):
            tracker.update(found, index / fps)
        best["main"] = min(best["main"], (time.perf_counter() - started) / len(frames))
    faces = float(np.mean([len(f) for f in frames]))
    return {"faces_per_frame": round(faces, 2), **{f"{k}_ms_per_frame": round(v * 1000, 3) for k, v in best.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", type=Path, required=True, help="folders with clip.mp4 and truth.json")
    parser.add_argument("--baseline", default="main", help="git commit of the 'before' tracker (default main)")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    baseline = load_baseline(args.baseline)
    results = {}
    for folder in args.clips:
        truth = json.loads((folder / "truth.json").read_text())
        detections, images = detect(folder / "clip.mp4")
        fps = truth["fps"]
        faces = np.mean([len(d) for d in detections])
        facecue, per_frame = run_facecue(detections, images, fps)
        boxes = {i: [{"id": 1000 * i + k, "box": list(d.box), "state": "confirmed"} for k, d in enumerate(found)]
                 for i, found in enumerate(detections)}
        rows = {f"{folder.name} detections": evaluate(truth, boxes, args.iou),  # coverage = the detector's recall
                f"{folder.name} facecue": evaluate(truth, facecue, args.iou),
                f"{folder.name} main": evaluate(truth, run_baseline(baseline, detections, fps), args.iou),
                f"{folder.name} bytetrack": evaluate(truth, run_bytetrack(detections, fps), args.iou)}
        rows[f"{folder.name} facecue"]["track_ms_per_frame"] = round(per_frame * 1000, 3)
        for metrics in rows.values():
            metrics["detections_per_frame"] = round(float(faces), 2)
        print(table(rows))
        print(f"{folder.name}: {faces:.2f} detections per frame; facecue tracking {per_frame * 1000:.3f} ms per frame "
              "(appearance + cut check + update)\n")
        results.update(rows)
        if folder.name == "ten":
            results["timing"] = timing(truth, images, baseline)
            print(f"timing on {folder.name}, truth boxes as detections: {results['timing']}\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
