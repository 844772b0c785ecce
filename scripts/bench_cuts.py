"""Scores of the cut detector (runtime/cuts.py) on clips with and without cuts, to choose its threshold.

    python scripts/bench_cuts.py --clips samples/*.mp4 --photos PHOTO... [--json build/bench_cuts.json]

Without cuts: every frame pair of each clip (people walking), a pan (a 640×480 window sliding over each
photo at 4 and 12 pixels per frame) and lighting changes (each photo dimmed to 0.5× over 0.5 s at 30 fps,
and a sudden step to 0.6×). With cuts: the last frame of each clip followed by the first frame of every
other clip, and each photo followed by every other photo. Prints the largest score without a cut and the
smallest score at a cut.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime.cuts import CutDetector  # noqa: E402


def frames(path: Path, limit: int = 300) -> list[np.ndarray]:
    video, out = cv2.VideoCapture(str(path)), []
    while len(out) < limit:
        ok, frame = video.read()
        if not ok:
            break
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    video.release()
    return out


def scores(sequence: list[np.ndarray]) -> list[float]:
    detector = CutDetector(0.0)
    return [detector.score(frame) for frame in sequence][1:]


def pan(photo: np.ndarray, speed: int, size=(640, 480)) -> list[np.ndarray]:
    photo = cv2.resize(photo, (max(size[0] * 2, photo.shape[1]), max(size[1], photo.shape[0])))
    return [photo[0:size[1], x:x + size[0]] for x in range(0, photo.shape[1] - size[0], speed)]


def dim(photo: np.ndarray, factors) -> list[np.ndarray]:
    return [np.clip(photo.astype(np.float32) * f, 0, 255).astype(np.uint8) for f in factors]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", type=Path, required=True)
    parser.add_argument("--photos", nargs="*", type=Path, default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    clips = {p.name: frames(p) for p in args.clips}
    photos = {p.name: cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in args.photos}
    without, at_cut = {}, {}
    for name, sequence in clips.items():
        without[f"walking {name}"] = max(scores(sequence))
    for name, photo in photos.items():
        without[f"pan 4 px/frame {name}"] = max(scores(pan(photo, 4)))
        without[f"pan 12 px/frame {name}"] = max(scores(pan(photo, 12)))
        without[f"dim to 0.5x in 0.5 s {name}"] = max(scores(dim(photo, np.linspace(1.0, 0.5, 15))))
        without[f"step to 0.6x {name}"] = max(scores(dim(photo, [1.0, 0.6])))
    for (a, first), (b, second) in itertools.permutations(clips.items(), 2):
        at_cut[f"{a} -> {b}"] = scores([first[-1], cv2.resize(second[0], first[-1].shape[1::-1])])[0]
    for (a, first), (b, second) in itertools.permutations(photos.items(), 2):
        at_cut[f"{a} -> {b}"] = scores([first, cv2.resize(second, first.shape[1::-1])])[0]
    worst_without = max(without, key=without.get)
    weakest_cut = min(at_cut, key=at_cut.get)
    print(f"{'case':60s} score")
    for name, value in sorted(without.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{'no cut: ' + name:60s} {value:.3f}")
    for name, value in sorted(at_cut.items(), key=lambda kv: kv[1])[:8]:
        print(f"{'cut: ' + name:60s} {value:.3f}")
    print(f"largest without a cut: {without[worst_without]:.3f} ({worst_without}); "
          f"smallest at a cut: {at_cut[weakest_cut]:.3f} ({weakest_cut}); "
          f"cuts below 0.5: {sum(v <= 0.5 for v in at_cut.values())} of {len(at_cut)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"without_cut": without, "at_cut": at_cut}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
