"""Make a video with many faces by panning and zooming over a group photo (for the runtime benchmark),
or a ground-truth tracking clip (scripts/track_scenes.py) with `--scenario`.

    python scripts/make_group_clip.py --image PHOTO --out build/group.mp4 [--seconds 4 --fps 30 --size 640x480] [--check]
    python scripts/make_group_clip.py --scenario crossing --out build/tracks/crossing [--faces PHOTO...] [--background IMAGE]

The camera starts on the whole photo, zooms in to `--max-zoom` while panning right and down, and comes
back, so faces move, grow and some leave the frame, as for a robot turning its head. `--check` runs the
full-range face detector over the clip and prints how many faces it finds per frame.
The photo is an argument, never bundled: use one you may use (no photo is committed with the project).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("make_group_clip")


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {text!r}") from None
    return width, height


def viewport(t: float, photo_size: tuple[int, int], aspect: float, max_zoom: float) -> tuple[float, float, float]:
    """Centre (x, y) and width, in photo pixels, of the view at time t in [0, 1)."""
    width, height = photo_size
    full_width = min(width, height * aspect)  # the largest view of the output's aspect inside the photo
    zoom = 1.0 + (max_zoom - 1.0) * 0.5 * (1.0 - math.cos(2.0 * math.pi * t))
    view_width = full_width / zoom
    view_height = view_width / aspect
    cx = width / 2 + (width - view_width) / 2 * math.sin(2.0 * math.pi * t)
    cy = height / 2 + (height - view_height) / 2 * math.sin(math.pi * t)
    return cx, cy, view_width


def render_frame(photo: np.ndarray, t: float, out_size: tuple[int, int], max_zoom: float) -> np.ndarray:
    out_width, out_height = out_size
    cx, cy, view_width = viewport(t, (photo.shape[1], photo.shape[0]), out_width / out_height, max_zoom)
    scale = out_width / view_width
    # Affine map photo → frame: scale about the view centre, then move it to the frame centre.
    matrix = np.array([[scale, 0.0, out_width / 2 - scale * cx], [0.0, scale, out_height / 2 - scale * cy]])
    return cv2.warpAffine(photo, matrix, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def load_photo(path: Path, out_size: tuple[int, int], max_zoom: float) -> np.ndarray:
    """The photo, shrunk once (INTER_AREA) so that no frame downscales it by more than max_zoom."""
    photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if photo is None:
        raise SystemExit(f"error: cannot read photo {path}")
    height, width = photo.shape[:2]
    fit = min(out_size[0] / width, out_size[1] / height) * max_zoom
    if fit < 1.0:
        photo = cv2.resize(photo, (round(width * fit), round(height * fit)), interpolation=cv2.INTER_AREA)
    return photo


def write_clip(photo: np.ndarray, out: Path, seconds: float, fps: float, size: tuple[int, int], max_zoom: float) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.stem + ".partial" + out.suffix)  # renamed when complete
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise SystemExit(f"error: OpenCV cannot write {out} (try an .mp4 or .avi name)")
    frames = max(1, round(seconds * fps))
    try:
        for index in range(frames):
            writer.write(render_frame(photo, index / frames, size, max_zoom))
    finally:
        writer.release()
    os.replace(partial, out)
    return frames


def count_faces(clip: Path) -> list[int]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from runtime.detector import FaceDetector

    counts = []
    video = cv2.VideoCapture(str(clip))
    with FaceDetector("full_range", running_mode="image") as detector:
        while True:
            ok, frame = video.read()
            if not ok:
                break
            counts.append(len(detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))))
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, help="group photo to pan over")
    parser.add_argument("--scenario", help="write a ground-truth tracking clip instead: crossing, cut, pan, crowd, ten "
                                           "(--out is then a folder for clip.mp4 and truth.json)")
    parser.add_argument("--faces", type=Path, nargs="*", help="--scenario: photos or videos to take face chips from")
    parser.add_argument("--background", type=Path, nargs="*",
                        help="--scenario: one or two background images without faces (default: skimage rocket, coffee)")
    parser.add_argument("--out", type=Path, default=Path("build/group.mp4"))
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--size", type=parse_size, default=(640, 480), help="WIDTHxHEIGHT")
    parser.add_argument("--max-zoom", type=float, default=1.3)
    parser.add_argument("--check", action="store_true", help="count faces per frame with the full-range detector")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.scenario:
        return write_scenario(args)
    if args.image is None:
        parser.error("--image is required (or --scenario)")

    photo = load_photo(args.image, args.size, args.max_zoom)
    frames = write_clip(photo, args.out, args.seconds, args.fps, args.size, args.max_zoom)
    log.info("wrote %s: %d frames, %dx%d at %g fps", args.out, frames, *args.size, args.fps)
    if args.check:
        counts = np.array(count_faces(args.out))
        log.info("faces per frame: min %d, median %d, max %d; frames with >= 5 faces: %.0f %%",
                 counts.min(), np.median(counts), counts.max(), 100.0 * np.mean(counts >= 5))


def write_scenario(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import track_scenes
    from skimage import data

    from runtime.detector import FaceDetector

    faces = track_scenes.faces_from(args.faces) if args.faces else track_scenes.default_faces()
    backgrounds = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in args.background or []]
    backgrounds += [data.rocket(), data.coffee()][len(backgrounds):]
    with FaceDetector("full_range", running_mode="image") as detector:
        scene = track_scenes.build(args.scenario, faces, backgrounds[0], backgrounds[1], detector)
    truth = track_scenes.write(scene, args.out, args.fps)
    log.info("wrote %s/clip.mp4 and truth.json: %d frames, %d chips, cuts at %s", args.out, len(truth["frames"]),
             len(scene.chips), truth["cuts"])


if __name__ == "__main__":
    main()
