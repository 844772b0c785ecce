"""Faces found per frame by each vendored MediaPipe model, and its time per frame, on video clips.

    python scripts/detector_counts.py samples/*.mp4 [--json build/detector_counts.json]

The evidence for the detector's default model (runtime/detector.py): prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime.detector import MODELS, FaceDetector  # noqa: E402


def measure(clip: Path, model: str) -> dict:
    counts, seconds = [], 0.0
    video = cv2.VideoCapture(str(clip))
    with FaceDetector(model, running_mode="video") as detector:
        index = 0
        while True:
            ok, frame = video.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            size = f"{frame.shape[1]}x{frame.shape[0]}"
            start = time.perf_counter()
            counts.append(len(detector.detect(rgb, index / 30.0)))
            seconds += time.perf_counter() - start
            index += 1
    video.release()
    if not counts:
        raise SystemExit(f"error: no frames read from {clip}")
    counts = np.array(counts)
    return {"clip": clip.name, "model": model, "frames": int(counts.size), "mean_faces": float(counts.mean()),
            "max_faces": int(counts.max()), "frames_without_face": float(np.mean(counts == 0)),
            "ms_per_frame": 1000.0 * seconds / counts.size, "size": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=Path("build/detector_counts.json"))
    args = parser.parse_args()
    rows = [measure(clip, model) for clip in args.clips for model in MODELS]
    print("| clip | model | frames | faces/frame (mean) | max | frames with none | ms/frame |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clip']} ({r['size']}) | {r['model']} | {r['frames']} | {r['mean_faces']:.2f} | {r['max_faces']} "
              f"| {100 * r['frames_without_face']:.0f} % | {r['ms_per_frame']:.1f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    partial = args.json.with_suffix(".partial")
    partial.write_text(json.dumps({"machine": platform.machine(), "rows": rows}, indent=1))
    partial.replace(args.json)


if __name__ == "__main__":
    main()
