"""Detection gaps of ground-truth clips: how long each face goes undetected between two detections.

    python scripts/occlusion_gaps.py --clips build/tracks/crossing ...

For every face of truth.json (scripts/make_group_clip.py --scenario), the spells without a detection at
IoU ≥ 0.5 that end with the face detected again, in seconds (the full-range detector, as perception runs
it). `tracker.remove_after` must outlast them for the face to keep its id (runtime/config.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracking import detect  # noqa: E402
from runtime.track_eval import iou_matrix  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", type=Path, required=True)
    args = parser.parse_args(argv)
    for folder in args.clips:
        truth = json.loads((folder / "truth.json").read_text())
        detections, _ = detect(folder / "clip.mp4")
        seen: dict[int, list[int]] = {}
        for frame, found in zip(truth["frames"], detections):
            boxes = np.array([d.box for d in found], float).reshape(-1, 4)
            for face in frame["faces"]:
                overlap = iou_matrix(np.array([face["box"]], float), boxes)
                if overlap.size and overlap.max() >= 0.5:
                    seen.setdefault(face["id"], []).append(frame["index"])
        gaps = sorted((round((b - a - 1) / truth["fps"], 2), face) for face, frames in seen.items()
                      for a, b in zip(frames, frames[1:]) if b - a > 1)
        print(f"{folder.name}: longest gaps (s, face): {gaps[::-1][:4]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
