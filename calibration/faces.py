"""Face crops for calibration, cut exactly as the runtime cuts them (runtime.faces, runtime.crop).

- `folder_crops`: `--images DIR` / `--crops DIR` for INT8 (the same semantics as `export.verify`);
- `labelled_crops`: one crop per labelled file under a root, for temperature fitting. With images, the
  largest detected face is taken; files without a face are skipped and counted.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError
from facecue.progress import progress
from runtime.crop import resize_chip
from runtime.faces import largest_face_crop, load_face_crops, read_rgb
from runtime.metadata import ModelInfo

log = logging.getLogger(__name__)


def folder_crops(info: ModelInfo, images: str | None, crops: str | None, count: int) -> np.ndarray:
    try:
        found = load_face_crops(images_dir=images, crops_dir=crops, size=info.input_size, margin=info.crop_margin,
                                max_faces=count)
    except (ValueError, FileNotFoundError) as error:
        raise CalibrationError(str(error)) from None
    return found.crops


@dataclass
class LabelledCrops:
    crops: np.ndarray  # uint8 [N, S, S, 3]
    paths: list[str]  # the label file's path of each crop
    skipped: dict[str, str]  # path → why it has no crop


def labelled_crops(info: ModelInfo, root: Path, paths: list[str], detect: bool) -> LabelledCrops:
    if not root.is_dir():
        raise CalibrationError(f"image root {root} does not exist")
    if not any((root / name).is_file() for name in paths):
        raise CalibrationError(f"none of the {len(paths)} labelled files is under {root} (e.g. {root / paths[0]}); "
                               "the label file's paths are relative to --images/--crops")
    crops, kept, skipped = [], [], {}
    detector = _detector() if detect else None
    try:
        for name in progress(paths, f"reading labelled {'photos' if detect else 'face crops'}", log, unit="files"):
            image = read_rgb(root / name)
            if image is None:
                skipped[name] = "missing or unreadable"
                continue
            if detector is None:
                crop = resize_chip(image, info.input_size)
            else:
                crop = largest_face_crop(detector, image, info.input_size, info.crop_margin)
                if crop is None:
                    skipped[name] = "no face found"
                    continue
            crops.append(crop)
            kept.append(name)
    finally:
        if detector is not None:
            detector.close()
    if skipped:
        reasons = {}
        for why in skipped.values():
            reasons[why] = reasons.get(why, 0) + 1
        log.warning("skipped %d of %d labelled files (%s), e.g. %s", len(skipped), len(paths),
                    ", ".join(f"{n} {why}" for why, n in reasons.items()), next(iter(skipped)))
    if not crops:
        raise CalibrationError(f"no usable face in the {len(paths)} labelled files under {root} "
                               f"({', '.join(sorted(set(skipped.values())))})")
    return LabelledCrops(np.stack(crops), kept, skipped)


def _detector():
    from runtime.detector import FaceDetector

    return FaceDetector("full_range", running_mode="image")
