"""Tiled face detection (runtime/tiles.py): faces per frame and ms per frame for each grid, and recall on photos.

    python scripts/bench_detector_tiles.py --clips samples/*.mp4 --every 1 \
        [--images PHOTO_OR_DIR ...] [--annotations DLIB.xml ...] [--grids 1x1 2x2 3x3] [--json build/bench_detector_tiles.json]

Every frame (every `--every`-th of a clip, each photo of `--images`) is run through one detector per grid in
turn, so the grids' times are measured side by side under the same load. `--annotations` reads dlib imglab
XML (`<image file=...><box top left width height/>`, paths relative to the XML) and reports recall at
IoU >= 0.3 with one-to-one greedy matching, and the detections left unmatched. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime.detector import FaceDetector  # noqa: E402
from runtime.tiles import iou  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def clip_frames(path: Path, every: int):
    video = cv2.VideoCapture(str(path))
    fps = video.get(cv2.CAP_PROP_FPS) or 30.0
    index = 0
    while True:
        ok, frame = video.read()
        if not ok:
            break
        if index % every == 0:
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), index / fps
        index += 1
    video.release()


def photo_paths(items: list[Path]) -> list[Path]:
    paths = []
    for item in items:
        paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if item.is_dir() else [item]
    return paths


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f"error: cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def measure(name: str, frames, grids: list[str], mode: str, threads: int = 0) -> list[dict]:
    """Faces and seconds per frame for every grid, the grids run one after another on each frame."""
    detectors = {grid: FaceDetector(running_mode=mode, tiles="off" if grid == "1x1" else grid, tile_threads=threads)
                 for grid in grids}
    counts = {grid: [] for grid in grids}
    seconds = {grid: [] for grid in grids}
    sizes = set()
    try:
        for i, (image, t) in enumerate(frames):
            sizes.add((image.shape[1], image.shape[0]))
            for grid, detector in detectors.items():
                start = time.perf_counter()
                found = detector.detect(image, t) if mode == "video" else detector.detect(image)
                if i > 0 or mode == "image":  # a clip's first call also warms the model up
                    seconds[grid].append(time.perf_counter() - start)
                counts[grid].append(len(found))
    finally:
        for detector in detectors.values():
            detector.close()
    if not counts[grids[0]]:
        raise SystemExit(f"error: no frames read from {name}")
    base = np.mean(seconds[grids[0]])
    widths = sorted({w for w, _ in sizes})
    size = "%dx%d" % sizes.pop() if len(sizes) == 1 else f"{widths[0]}-{widths[-1]} px wide"
    return [{"source": name, "size": size, "grid": grid, "tile_threads": threads, "frames": len(counts[grid]),
             "faces_per_frame": float(np.mean(counts[grid])), "ms_per_frame": 1000.0 * float(np.mean(seconds[grid])),
             "time_vs_1x1": float(np.mean(seconds[grid]) / base)} for grid in grids]


def read_dlib_xml(path: Path) -> list[tuple[Path, list[tuple[float, float, float, float]]]]:
    root = ET.parse(path).getroot()
    images = []
    for image in root.iter("image"):
        boxes = []
        for box in image.iter("box"):
            if box.get("ignore") == "1":
                continue
            x, y, w, h = (float(box.get(k)) for k in ("left", "top", "width", "height"))
            boxes.append((x, y, x + w, y + h))
        images.append((path.parent / image.get("file"), boxes))
    return images


def recall(annotations: list[Path], grids: list[str], threshold: float = 0.3) -> list[dict]:
    labelled = [item for xml in annotations for item in read_dlib_xml(xml)]
    rows = []
    for grid in grids:
        matched = truth = unmatched = 0
        with FaceDetector(running_mode="image", tiles="off" if grid == "1x1" else grid) as detector:
            for path, boxes in labelled:
                found = [d.box for d in detector.detect(read_rgb(path))]
                pairs = sorted(((iou(b, f), i, j) for i, b in enumerate(boxes) for j, f in enumerate(found)), reverse=True)
                used_truth, used_found = set(), set()
                for overlap, i, j in pairs:
                    if overlap >= threshold and i not in used_truth and j not in used_found:
                        used_truth.add(i)
                        used_found.add(j)
                matched += len(used_truth)
                truth += len(boxes)
                unmatched += len(found) - len(used_found)
        rows.append({"grid": grid, "images": len(labelled), "faces": truth, "found": matched,
                     "recall": matched / max(1, truth), "unmatched_detections": unmatched})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="*", type=Path, default=[])
    parser.add_argument("--every", type=int, default=1, help="use every n-th frame of a clip")
    parser.add_argument("--images", nargs="*", type=Path, default=[], help="photos or folders of photos (one row)")
    parser.add_argument("--annotations", nargs="*", type=Path, default=[], help="dlib imglab XML files")
    parser.add_argument("--grids", nargs="+", default=["1x1", "2x2", "3x3"])
    parser.add_argument("--tile-threads", type=int, nargs="+", default=[0], help="detector.tile_threads values to compare")
    parser.add_argument("--json", type=Path, default=Path("build/bench_detector_tiles.json"))
    args = parser.parse_args()
    for path in [*args.clips, *args.images, *args.annotations]:
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist")
    rows = []
    for threads in args.tile_threads:
        for clip in args.clips:
            rows += measure(clip.name, clip_frames(clip, args.every), args.grids, "video", threads)
        if args.images:
            photos = photo_paths(args.images)
            rows += measure(f"{len(photos)} photos", ((read_rgb(p), None) for p in photos), args.grids, "image", threads)
    if rows:
        print("| source | size | grid | tile threads | frames | faces/frame | ms/frame | time vs 1x1 |")
        print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['size']} | {r['grid']} | {r['tile_threads']} | {r['frames']} | {r['faces_per_frame']:.2f} "
              f"| {r['ms_per_frame']:.1f} | {r['time_vs_1x1']:.2f}x |")
    recalls = recall(args.annotations, args.grids) if args.annotations else []
    if recalls:
        print("\n| grid | images | faces | found (IoU >= 0.3) | recall | unmatched detections |")
        print("|---|---|---|---|---|---|")
        for r in recalls:
            print(f"| {r['grid']} | {r['images']} | {r['faces']} | {r['found']} | {r['recall']:.3f} | {r['unmatched_detections']} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    partial = args.json.with_suffix(".partial")
    partial.write_text(json.dumps({"machine": f"{platform.machine()} {platform.processor()}".strip(),
                                   "command": sys.argv, "rows": rows, "recall": recalls}, indent=1))
    partial.replace(args.json)


if __name__ == "__main__":
    main()
