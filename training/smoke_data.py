"""`python -m training.smoke_data OUT`: a generated data set for the training smoke run (configs/train/smoke.yaml).

Chips with no faces in them, whose colours code the labels (gender: red or blue, emotion: how green, age:
how bright) plus noise, so even a tiny random-init model learns them and the loss curve falls. Written as
`OUT/train.csv` and `OUT/val.csv` in the per-image layout (`path,age_group,gender_name,emotion`, names as
README "Labels" describes) and `OUT/chips/*.png`. Plumbing only: what it trains recognises colours, not people.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

from runtime.metadata import THESIS_LABELS

AGES = ("3-9", "20-29", "60-69")
EMOTIONS = ("Happy", "Sad", "Neutral")
SIZE = 48


def chip(gender: int, emotion: int, age: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 chip: a colour field coding the labels, a darker blob where a face would be, noise."""
    red, blue = (200, 60) if gender == 0 else (60, 200)
    colour = np.array([red, 60 + 70 * emotion, blue], np.float32) * (0.55, 0.8, 1.05)[age]
    image = np.broadcast_to(colour, (SIZE, SIZE, 3)).copy()
    cy, cx = rng.integers(SIZE // 3, 2 * SIZE // 3, 2)
    cv2.ellipse(image, (int(cx), int(cy)), (SIZE // 4, SIZE // 3), 0, 0, 360, tuple(float(c) * 0.7 for c in colour), -1)
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def write_split(out: Path, name: str, count: int, rng: np.random.Generator) -> Path:
    rows = []
    for i in range(count):
        gender, emotion, age = (int(rng.integers(n)) for n in (2, len(EMOTIONS), len(AGES)))
        path = f"chips/{name}_{i:03d}.png"
        cv2.imwrite(str(out / path), cv2.cvtColor(chip(gender, emotion, age, rng), cv2.COLOR_RGB2BGR))
        rows.append([path, AGES[age], THESIS_LABELS["gender"][gender].lower(), EMOTIONS[emotion].lower()])
    labels = out / f"{name}.csv"
    with labels.open("w", newline="") as file:
        csv.writer(file).writerows([["path", "age_group", "gender_name", "emotion"], *rows])
    return labels


def make_smoke_data(out: Path, train: int = 96, val: int = 32, seed: int = 0) -> tuple[Path, Path]:
    (out / "chips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    return write_split(out, "train", train, rng), write_split(out, "val", val, rng)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.smoke_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python -m training.smoke_data runs/smoke/data")
    parser.add_argument("out", help="folder for train.csv, val.csv and chips/")
    parser.add_argument("--train", type=int, default=96, help="training chips (default 96)")
    parser.add_argument("--val", type=int, default=32, help="validation chips (default 32)")
    args = parser.parse_args(argv)
    try:
        train, val = make_smoke_data(Path(args.out), args.train, args.val)
    except OSError as error:
        print(f"error: cannot write {args.out}: {error}", file=sys.stderr)
        return 2
    print(f"wrote {train} and {val} ({args.train} + {args.val} chips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
