"""Ground-truth tracking clips: real face chips moving over real backgrounds along known paths.

    python scripts/make_group_clip.py --scenario crossing --out build/tracks/crossing [--faces PHOTO...]
        [--background IMAGE] [--fps 30]        # writes clip.mp4 and truth.json into --out

Scenarios (640×480): `crossing` (8 s, 4 people: two cross, one passes behind a standing one for about
1.6 s, one leaves the image and is back about 1.5 s later), `cut` (8 s: 3 people, then a cut to
another background with 3 other people standing where the first ones stood), `pan` (6 s: the camera pans
over a wide background, 3 people in the scene slide across and out of the image), `crowd` (8 s, 6 people
in two rows crossing each other), `ten` (4 s, 10 faces drifting, for timing).

Chips are square crops (face side × 1.6) of every face of 40 px or more in the `--faces` photos or videos
(first frame), or by default the faces in the project's sample clips and `skimage.data.astronaut()`. A chip
pasted later covers earlier ones (`depth`). The truth box of a face is where the full-range detector
finds it on the chip alone, moved with the chip; `visible` is the fraction of that box inside the image
and not covered by a chip in front. truth.json: {"fps", "size": [w, h], "cuts": [first frame of each new
shot], "frames": [{"index", "faces": [{"id", "box": [x1, y1, x2, y2], "visible"}]}]}; ids differ per shot.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from runtime.crop import crop_face  # noqa: E402

SIZE = (640, 480)
CHIP_MARGIN = 0.6


@dataclass
class Chip:
    image: np.ndarray  # side×side RGB
    face: tuple[float, float, float, float]  # face box relative to the chip centre, in chip sides


@dataclass
class Person:
    chip: int
    keys: list[tuple[float, float, float]]  # (t, x, y): the chip centre in background pixels, linear between keys
    depth: int = 0  # larger is in front
    side: int = 110

    def where(self, t: float) -> tuple[float, float] | None:
        times = [k[0] for k in self.keys]
        if t < times[0] or t > times[-1]:
            return None
        return float(np.interp(t, times, [k[1] for k in self.keys])), float(np.interp(t, times, [k[2] for k in self.keys]))


@dataclass
class Shot:
    start: float
    end: float
    background: int  # index into the backgrounds
    people: list[Person]
    pan: tuple[float, float] = (0.0, 0.0)  # camera x offset (background pixels) at start and end
    first_id: int = 0


@dataclass
class Scene:
    shots: list[Shot]
    seconds: float
    chips: list[Chip] = field(default_factory=list)
    backgrounds: list[np.ndarray] = field(default_factory=list)


def make_chips(faces_rgb: list[np.ndarray], detector, background: np.ndarray, side: int = 128,
               min_face: int = 40) -> list[Chip]:
    """One chip per face of at least `min_face` pixels in the images; the face box on the chip measured by
    `detector` on the chip alone. Only chips the detector finds on `background` at the sizes scenes paste
    them (96 and 110 px) are kept, so that clips test tracking rather than the detector."""
    chips = []
    boxes = [(image, d.box) for image in faces_rgb for d in detector.detect(image) if d.box[2] - d.box[0] >= min_face]
    for image, box in boxes:
        chip = crop_face(image, box, side, CHIP_MARGIN)
        canvas = np.full((side * 3, side * 3, 3), 128, np.uint8)  # the chip alone on grey
        canvas[side:2 * side, side:2 * side] = chip
        seen = detector.detect(canvas)
        if len(seen) != 1 or not all(_found(detector, background, chip, size) for size in (96, 110)):
            continue
        x1, y1, x2, y2 = seen[0].box
        chips.append(Chip(chip, ((x1 - 1.5 * side) / side, (y1 - 1.5 * side) / side,
                                 (x2 - 1.5 * side) / side, (y2 - 1.5 * side) / side)))
    return chips


def _found(detector, background: np.ndarray, chip: np.ndarray, side: int) -> bool:
    frame = cv2.resize(background, SIZE, interpolation=cv2.INTER_AREA)
    top, left = (SIZE[1] - side) // 2, (SIZE[0] - side) // 2
    frame[top:top + side, left:left + side] = cv2.resize(chip, (side, side), interpolation=cv2.INTER_AREA)
    return len(detector.detect(frame)) == 1


def scenario(name: str, chips: int) -> tuple[list[Shot], float]:
    """The shots of a named scenario (people drawn from `chips` chips)."""
    c = lambda i: i % chips  # noqa: E731
    if name == "crossing":
        return [Shot(0.0, 8.0, 0, [
            Person(c(0), [(0, 80, 150), (3.5, 700, 150), (3.7, 700, 150), (8, 380, 150)], depth=1),  # out ~1.5 s
            Person(c(1), [(0, 560, 215), (8, 80, 215)], depth=2),  # crosses person 0, partly in front
            Person(c(2), [(0, 320, 360), (8, 330, 360)], depth=3),  # stands in front
            Person(c(3), [(0, 30, 355), (8, 720, 355)], depth=0),  # walks behind person 2 (~1.6 s hidden)
        ])], 8.0
    if name == "cut":
        return [Shot(0.0, 4.0, 0, [Person(c(0), [(0, 150, 180), (4, 250, 180)]),
                                   Person(c(1), [(0, 450, 200), (4, 380, 200)]),
                                   Person(c(2), [(0, 320, 360), (4, 320, 350)])]),
                Shot(4.0, 8.0, 1, [Person(c(3), [(4, 250, 180), (8, 150, 180)]),
                                   Person(c(4), [(4, 380, 200), (8, 480, 200)]),
                                   Person(c(5), [(4, 320, 350), (8, 300, 360)])], first_id=10)], 8.0
    if name == "pan":  # a background 1600 wide, the camera moves 160 px/s to the right
        return [Shot(0.0, 6.0, 2, [Person(c(0), [(0, 300, 200), (6, 340, 200)]),
                                   Person(c(1), [(0, 600, 260), (6, 560, 260)]),
                                   Person(c(2), [(0, 900, 330), (6, 1300, 330)], depth=1)],
                     pan=(0.0, 960.0))], 6.0
    if name == "crowd":
        people = [Person(c(i), [(0, 60 + 110 * i, 150 + 12 * (i % 2)), (8, 600 - 110 * i + 330, 150 + 12 * (i % 2))],
                         depth=i % 2) for i in range(3)]
        people += [Person(c(i + 3), [(0, 600 - 110 * i, 330), (8, 60 + 110 * i - 200, 330 - 20 * (i % 2))],
                          depth=i) for i in range(3)]
        for p in people:  # turn around at the image border: walk there and back
            (t0, x0, y0), (t1, x1, y1) = p.keys
            turn = float(np.clip(x1, 70, 570))
            p.keys = [(t0, x0, y0), (4.0, turn, (y0 + y1) / 2), (t1, x0, y1)]
        return [Shot(0.0, 8.0, 0, people)], 8.0
    if name == "ten":
        grid = [(95 + 150 * (i % 4), 90 + 150 * (i // 4)) for i in range(10)]
        return [Shot(0.0, 4.0, 0, [Person(c(i), [(0, x, y), (4, x + 30 * ((i % 3) - 1), y + 20 * ((i % 2) * 2 - 1))],
                                          side=96) for i, (x, y) in enumerate(grid)])], 4.0
    raise ValueError(f"unknown scenario {name!r} (crossing, cut, pan, crowd, ten)")


SCENARIOS = ("crossing", "cut", "pan", "crowd", "ten")


def backgrounds_for(base: np.ndarray, other: np.ndarray) -> list[np.ndarray]:
    """[the main background, the one after a cut, a wide one for the pan] at SIZE's height."""
    w, h = SIZE
    return [cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA),
            cv2.resize(other, (w, h), interpolation=cv2.INTER_AREA),
            cv2.resize(base, (w * 5 // 2, h), interpolation=cv2.INTER_LINEAR)]


def render(scene: Scene, t: float) -> tuple[np.ndarray, list[dict], int]:
    """The frame at time t, its truth faces and the index of its shot."""
    shot_index = max(i for i, s in enumerate(scene.shots) if s.start <= t or i == 0)
    shot = scene.shots[shot_index]
    w, h = SIZE
    progress = (t - shot.start) / max(shot.end - shot.start, 1e-9)
    offset = shot.pan[0] + (shot.pan[1] - shot.pan[0]) * progress
    background = scene.backgrounds[shot.background]
    left = int(round(min(max(offset, 0), background.shape[1] - w)))
    frame = background[:h, left:left + w].copy()
    placed = []  # (depth, person id, chip left, top, side, face box)
    for number, person in enumerate(shot.people):
        where = person.where(t)
        if where is None:
            continue
        cx, cy = where[0] - left, where[1]
        chip = scene.chips[person.chip]
        side = person.side
        fx1, fy1, fx2, fy2 = chip.face
        face = (cx + fx1 * side, cy + fy1 * side, cx + fx2 * side, cy + fy2 * side)
        placed.append((person.depth, shot.first_id + number, int(round(cx - side / 2)), int(round(cy - side / 2)), side, face, chip))
    placed.sort(key=lambda p: p[0])
    for _, _, x, y, side, _, chip in placed:
        patch = cv2.resize(chip.image, (side, side), interpolation=cv2.INTER_AREA)
        x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + side, w), min(y + side, h)
        if x2 > x1 and y2 > y1:
            frame[y1:y2, x1:x2] = patch[y1 - y:y2 - y, x1 - x:x2 - x]
    faces = []
    for rank, (_, person_id, _, _, _, face, _) in enumerate(placed):
        front = [(p[2], p[3], p[2] + p[4], p[3] + p[4]) for p in placed[rank + 1:]]
        visible = _visible(face, front)
        if visible > 0:
            faces.append({"id": person_id, "box": [round(v, 1) for v in face], "visible": round(visible, 3)})
    return frame, faces, shot_index


def _visible(face, covers) -> float:
    """Fraction of the face box inside the image and not under any of `covers` (rasterised at 1 px)."""
    x1, y1, x2, y2 = (int(round(v)) for v in face)
    if x2 <= x1 or y2 <= y1:
        return 0.0
    mask = np.zeros((y2 - y1, x2 - x1), bool)
    w, h = SIZE
    mask[max(0, -y1):max(0, h - y1), max(0, -x1):max(0, w - x1)] = True
    for cx1, cy1, cx2, cy2 in covers:
        mask[max(0, cy1 - y1):max(0, cy2 - y1), max(0, cx1 - x1):max(0, cx2 - x1)] = False
    return float(mask.mean())


def frames(scene: Scene, fps: float):
    """Yield (index, RGB frame, truth faces, shot index) for every frame."""
    for index in range(int(round(scene.seconds * fps))):
        frame, faces, shot = render(scene, index / fps)
        yield index, frame, faces, shot


def write(scene: Scene, out: Path, fps: float) -> dict:
    """Write out/clip.mp4 and out/truth.json; returns the truth."""
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "clip.partial.mp4"
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    if not writer.isOpened():
        raise SystemExit(f"error: OpenCV cannot write {partial}")
    truth = {"fps": fps, "size": list(SIZE), "cuts": [], "frames": []}
    last_shot = 0
    try:
        for index, frame, faces, shot in frames(scene, fps):
            if shot != last_shot:
                truth["cuts"].append(index)
                last_shot = shot
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            truth["frames"].append({"index": index, "faces": faces})
    finally:
        writer.release()
    os.replace(partial, out / "clip.mp4")
    (out / "truth.json").write_text(json.dumps(truth))
    return truth


def default_faces() -> list[np.ndarray]:
    """Real faces that ship with the project or its test dependencies: the sample clips and the astronaut."""
    from skimage import data

    images = [data.astronaut()]
    for clip, index in (("head-pose-face-detection-female-and-male.mp4", 0), ("face-demographics-walking-and-pause.mp4", 30),
                        ("classroom.mp4", 0)):
        video = cv2.VideoCapture(str(ROOT / "samples" / clip))
        video.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = video.read()
        video.release()
        if ok:
            images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return images


def faces_from(paths: list[Path]) -> list[np.ndarray]:
    images = []
    for path in paths:
        if path.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov"):
            video = cv2.VideoCapture(str(path))
            ok, frame = video.read()
            video.release()
        else:
            frame = cv2.imread(str(path))
            ok = frame is not None
        if not ok:
            raise SystemExit(f"error: cannot read faces from {path}")
        images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return images


def build(name: str, faces_rgb: list[np.ndarray], background: np.ndarray, other: np.ndarray, detector) -> Scene:
    chips = make_chips(faces_rgb, detector, background)
    if len(chips) < 2:
        raise SystemExit("error: fewer than 2 usable faces for the chips")
    shots, seconds = scenario(name, len(chips))
    return Scene(shots, seconds, chips, backgrounds_for(background, other))
