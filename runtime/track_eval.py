"""Score a run's tracks against ground truth with MOT-style metrics.

    python -m runtime.track_eval --truth build/tracks/crossing/truth.json --jsonl run.jsonl [--iou 0.5] [--json OUT]

The truth is what scripts/make_group_clip.py --scenario writes (truth.json: per frame the faces' ids,
boxes and visible fractions, and the frames where cuts are); the run is facecue's JSON lines (`frame`
records, matched to the truth by `index`). A reported track claims a face unless its state is `lost` (a
lost track's box is only a prediction). Per frame, claims and truth faces are paired one to one by IoU
(scipy's linear_sum_assignment), a pair counting at IoU ≥ `--iou` (0.5 by default, as in MOT; faces
under 40 px make 0.3 a fairer choice). A face is a target when it is at least `--min-size` pixels wide
and at least `--min-visible` of it is in view; a claim paired with a face that is no target is neither a
hit nor a false positive.

Metrics: `coverage` (targets paired / targets), `id_switches` (a face paired with another track id than
the last time it was paired), `fragmentations` (a face's pairing interrupted while it is a target, then
resumed), `false_positives`, `idf1` (identity F1: the best one-to-one mapping of face ids to track ids,
Ristani et al. 2016), `ids_across_cuts` (track ids claimed both before and after a cut) and
`boxes_outside` (reported boxes reaching more than half a pixel outside the image).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

METRICS = ("coverage", "id_switches", "fragmentations", "false_positives", "idf1", "ids_across_cuts", "boxes_outside")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def evaluate(truth: dict[str, Any], tracks: dict[int, list[dict[str, Any]]], iou: float = 0.5,
             min_size: float = 40.0, min_visible: float = 0.7) -> dict[str, Any]:
    """`tracks`: frame index → reported tracks ({"id", "box", "state"}). Returns the metrics."""
    width, height = truth["size"]
    cuts = sorted(truth.get("cuts", []))
    targets = hits = false_positives = switches = fragmentations = outside = 0
    last_id: dict[int, int] = {}  # face → track id it was last paired with
    interrupted: dict[int, bool] = defaultdict(bool)
    together: dict[tuple[int, int], int] = defaultdict(int)  # (face, track) → frames paired on a target
    face_frames: dict[int, int] = defaultdict(int)
    claim_frames: dict[int, int] = defaultdict(int)
    shots_of: dict[int, set[int]] = defaultdict(set)  # track id → shots it was claimed in
    for frame in truth["frames"]:
        index = frame["index"]
        shot = sum(index >= c for c in cuts)
        reported = tracks.get(index, [])
        outside += sum(bool(b[0] < -0.5 or b[1] < -0.5 or b[2] > width + 0.5 or b[3] > height + 0.5)
                       for b in (t["box"] for t in reported))
        claims = [t for t in reported if t.get("state") != "lost"]
        faces = frame["faces"]
        is_target = [f["visible"] >= min_visible and f["box"][2] - f["box"][0] >= min_size for f in faces]
        overlap = iou_matrix(np.array([f["box"] for f in faces], float).reshape(-1, 4),
                             np.array([t["box"] for t in claims], float).reshape(-1, 4))
        paired: dict[int, int] = {}  # face row → claim column
        if overlap.size:
            rows, cols = linear_sum_assignment(-overlap)
            paired = {r: c for r, c in zip(rows, cols) if overlap[r, c] >= iou}
        for column, claim in enumerate(claims):
            shots_of[claim["id"]].add(shot)
            row = next((r for r, c in paired.items() if c == column), None)
            if row is None:
                false_positives += 1
            if row is None or is_target[row]:
                claim_frames[claim["id"]] += 1
        for row, face in enumerate(faces):
            if not is_target[row]:
                continue
            targets += 1
            face_frames[face["id"]] += 1
            if row not in paired:
                interrupted[face["id"]] = face["id"] in last_id
                continue
            hits += 1
            track_id = claims[paired[row]]["id"]
            together[(face["id"], track_id)] += 1
            if face["id"] in last_id and last_id[face["id"]] != track_id:
                switches += 1
            if interrupted[face["id"]]:
                fragmentations += 1
                interrupted[face["id"]] = False
            last_id[face["id"]] = track_id
    return {
        "frames": len(truth["frames"]), "targets": targets,
        "coverage": round(hits / targets, 4) if targets else None,
        "id_switches": switches, "fragmentations": fragmentations, "false_positives": false_positives,
        "idf1": _idf1(together, face_frames, claim_frames),
        "ids_across_cuts": int(sum(len(shots) > 1 for shots in shots_of.values())),
        "boxes_outside": outside, "iou": iou,
    }


def _idf1(together: dict[tuple[int, int], int], face_frames: dict[int, int], claim_frames: dict[int, int]) -> float | None:
    total = sum(face_frames.values()) + sum(claim_frames.values())
    if total == 0:
        return None
    faces, claims = sorted(face_frames), sorted(claim_frames)
    if not faces or not claims:
        return 0.0
    gain = np.array([[together.get((f, c), 0) for c in claims] for f in faces], float)
    rows, cols = linear_sum_assignment(-gain)
    return round(float(2.0 * gain[rows, cols].sum() / total), 4)


def read_jsonl_tracks(path: Path) -> dict[int, list[dict[str, Any]]]:
    tracks: dict[int, list[dict[str, Any]]] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{number}: not a JSON line") from None
            if record.get("type") == "frame":
                tracks[record["index"]] = record["tracks"]
    return tracks


def table(rows: dict[str, dict[str, Any]]) -> str:
    """One line per run: its name and the metrics."""
    header = f"{'run':28s} " + " ".join(f"{m:>15s}" for m in METRICS)
    lines = [header]
    for name, metrics in rows.items():
        lines.append(f"{name:28s} " + " ".join(f"{_fmt(metrics.get(m)):>15s}" for m in METRICS))
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truth", type=Path, required=True, help="truth.json from scripts/make_group_clip.py --scenario")
    parser.add_argument("--jsonl", type=Path, required=True, help="a run's JSON lines (facecue run --jsonl)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for a claim to pair with a face (default 0.5)")
    parser.add_argument("--min-size", type=float, default=40.0, help="faces narrower than this (pixels) are no targets")
    parser.add_argument("--min-visible", type=float, default=0.7, help="faces less visible than this are no targets")
    parser.add_argument("--json", type=Path, help="also write the metrics to this file")
    args = parser.parse_args(argv)
    try:
        truth = json.loads(args.truth.read_text(encoding="utf-8"))
        if not isinstance(truth, dict) or "frames" not in truth or "size" not in truth:
            raise ValueError(f"{args.truth}: not a truth file (needs 'size' and 'frames')")
        tracks = read_jsonl_tracks(args.jsonl)
        if not tracks:
            raise ValueError(f"{args.jsonl}: no frame records")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    metrics = evaluate(truth, tracks, args.iou, args.min_size, args.min_visible)
    print(table({args.jsonl.name: metrics}))
    print(json.dumps(metrics))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
