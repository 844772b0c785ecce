"""Face crops from a folder, for `--images DIR` / `--crops DIR` in export verification, calibration and training.

- images: photos or video frames → FaceDetector (IMAGE mode) → `crop_face` per face, exactly as the runtime;
- crops: face chips that are already cut → `resize_chip`.
Subfolders are searched too (a dataset laid out as one folder per class or per person), and files are read
in sorted path order, so runs are repeatable. A folder with nothing to read raises FacesError naming it.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from facecue.progress import Progress
from runtime.crop import crop_face, resize_chip

log = logging.getLogger(__name__)

class FacesError(ValueError):
    """A face folder has nothing usable (no image files, none readable, no faces found); the message names it."""


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def add_face_arguments(parser: argparse.ArgumentParser, *, required: bool = True, what: str = "") -> None:
    """The `--images DIR | --crops DIR` pair: one definition, so the flags mean the same in every command."""
    faces = parser.add_mutually_exclusive_group(required=required)
    faces.add_argument("--images", metavar="DIR", help=f"{what}photos or video frames: faces are found by the "
                                                        "runtime's detector and cut with its crop function")
    faces.add_argument("--crops", metavar="DIR", help=f"{what}face chips already cut: each is resized with the "
                                                       "runtime's resize_chip")


@dataclass
class FaceCrops:
    crops: np.ndarray  # uint8 [N, S, S, 3] RGB
    names: list[str]  # one per crop: "<file>" for chips, "<file>#<face>" for faces found in images


def load_face_crops(images_dir: str | Path | None = None, crops_dir: str | Path | None = None, *, size: int,
                    margin: float = 0.0, detector_model: str = "full_range", min_confidence: float = 0.5,
                    max_faces: int | None = None) -> FaceCrops:
    if images_dir is None and crops_dir is None:
        raise FacesError("give a folder of images (faces are detected) or a folder of face crops")
    crops: list[np.ndarray] = []
    names: list[str] = []
    if images_dir is not None:
        _faces_from_images(Path(images_dir), size, margin, detector_model, min_confidence, max_faces, crops, names)
    if crops_dir is not None and (max_faces is None or len(crops) < max_faces):
        _chips(Path(crops_dir), size, max_faces, crops, names)
    return FaceCrops(crops=np.stack(crops), names=names)


def _faces_from_images(folder: Path, size: int, margin: float, detector_model: str, min_confidence: float,
                       max_faces: int | None, crops: list, names: list) -> None:
    from runtime.detector import FaceDetector  # MediaPipe only when photos need detecting, not for chips

    paths = image_files(folder)
    found_before, read = len(crops), 0
    with FaceDetector(detector_model, min_confidence=min_confidence, running_mode="image") as detector, \
            Progress(f"finding faces in {folder}", log, total=len(paths), unit="images") as bar:
        for done, (path, image) in enumerate(_read_images(paths, bar), 1):
            read = done
            for index, detection in enumerate(detector.detect(image)):
                if max_faces is not None and len(crops) >= max_faces:
                    return
                crops.append(crop_face(image, detection.box, size, margin))
                names.append(f"{path.relative_to(folder).as_posix()}#{index}")
            bar.set_note(f"{len(crops) - found_before} faces")
    if read == 0:
        raise FacesError(f"no readable images in {folder} ({len(paths)} files with an image suffix)")
    if len(crops) == found_before:
        raise FacesError(f"no faces found in the {read} images read from {folder} "
                         f"(detector {detector_model!r}, min_confidence {min_confidence})")


def read_rgb(path: str | Path) -> np.ndarray | None:
    """An image file as RGB, or None when OpenCV cannot read it (missing, empty or not an image)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def largest_face_crop(detector, image_rgb: np.ndarray, size: int, margin: float) -> np.ndarray | None:
    """The crop of the largest face a photo holds (a labelled photo shows one person), or None."""
    faces = detector.detect(image_rgb)
    if not faces:
        return None
    largest = max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    return crop_face(image_rgb, largest.box, size, margin)


def _chips(folder: Path, size: int, max_faces: int | None, crops: list, names: list) -> None:
    paths = image_files(folder)
    read = 0
    with Progress(f"reading face crops in {folder}", log, total=len(paths), unit="files") as bar:
        for path, chip in _read_images(paths, bar):
            read += 1
            if max_faces is not None and len(crops) >= max_faces:
                return
            crops.append(resize_chip(chip, size))
            names.append(path.relative_to(folder).as_posix())
    if read == 0:
        raise FacesError(f"no readable face crops in {folder} ({len(paths)} files with an image suffix)")


def image_files(folder: Path) -> list[Path]:
    """The image files in `folder` and its subfolders, sorted; FacesError (or FileNotFoundError) when none."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise FacesError(f"no image files in {folder} or its subfolders "
                         f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def _read_images(paths: list[Path], bar: Progress) -> Iterator[tuple[Path, np.ndarray]]:
    """Each readable image as RGB, one at a time, counted on `bar`; unreadable files are logged and skipped."""
    for path in paths:
        bar.update()
        image = read_rgb(path)
        if image is None:
            log.warning("faces: cannot read %s, skipped", path)
            continue
        yield path, image
