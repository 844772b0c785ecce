"""Label CSVs → face crops + labels, for training and evaluation.

CSV: any layout runtime.labels reads (the thesis layout, `path,task,label`, or a per-image CSV with named
columns such as UTKFace's or fer2013's), paths relative to a root folder. Labels become long[3] in the
thesis' index map (Age 0, Gender 1, Emotion 2), −100 for a missing label.

Two kinds of source, as `--crops` / `--images` everywhere in facecue (runtime/faces.py):
- crops: face chips, read per sample and resized with the runtime's `resize_chip`;
- images: photos, run once through the runtime's detector and `crop_face` (the largest face is the
  labelled subject), cached as one uint8 .npy per CSV so later epochs and runs skip the detector.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from facecue.progress import Progress
from export.heads import THESIS_TASKS
from runtime.crop import resize_chip
from runtime.faces import largest_face_crop, read_rgb
from runtime.labels import MISSING, LabelsError, read_label_csv
from training.config import DataSource

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A label CSV or its images cannot be used; the message names the file, row and column."""


@dataclass
class LabelTable:
    """Rows of one or more CSVs: image paths, labels long [N,3] (Age, Gender, Emotion), data-set names."""
    paths: list[Path]
    labels: np.ndarray
    datasets: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def read_labels(csv_path: str | Path, root: str | Path, dataset: str | None = None) -> LabelTable:
    """One label CSV in any layout runtime.labels reads; every bad row or value is an error naming file and line,
    and every image must exist and look like an image before training starts."""
    csv_path, root = Path(csv_path), Path(root)
    if not root.is_dir():
        raise DataError(f"image root folder not found: {root} (for {csv_path})")
    try:
        table = read_label_csv(csv_path)
    except LabelsError as error:
        raise DataError(str(error)) from None
    paths = [root / path for path in table.paths]
    names = [name or dataset or csv_path.stem for name in table.datasets]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DataError(f"{csv_path}: {len(absent)} image file(s) not found under {root}, e.g. {absent[0]}")
    # OpenCV checks the file signature only (microseconds a file), so a file that is no image fails here,
    # not hours into training; a truncated image still fails when it is read (read_image_rgb)
    unreadable = [p for p in paths if not cv2.haveImageReader(str(p))]
    if unreadable:
        raise DataError(f"{csv_path}: cannot read image {unreadable[0]} (not an image OpenCV can decode)"
                        + (f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""))
    return LabelTable(paths, table.labels, names)


def concat(tables: list[LabelTable]) -> LabelTable:
    return LabelTable([p for t in tables for p in t.paths], np.concatenate([t.labels for t in tables]),
                      [n for t in tables for n in t.datasets])


def check_tasks(table: LabelTable, tasks: list[str], what: str) -> None:
    """Every trained task needs at least one label, or its head and loss would be meaningless."""
    for task in tasks:
        if not (table.labels[:, THESIS_TASKS.index(task)] != MISSING).any():
            raise DataError(f"{what}: task {task!r} has no labels (all -100); drop it from data.tasks or add data")


def read_image_rgb(path: Path) -> np.ndarray:
    image = read_rgb(path)
    if image is None:
        raise DataError(f"cannot read image {path} (missing, empty or not an image OpenCV can decode)")
    return image


def _cache_file(table: LabelTable, size: int, margin: float, cache_dir: Path, stem: str) -> Path:
    digest = hashlib.sha1(f"{size}|{margin}".encode())
    for path in table.paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return cache_dir / f"{stem}-{size}px-{digest.hexdigest()[:16]}.npz"


def detect_and_crop(table: LabelTable, size: int, margin: float, cache_dir: Path | None, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """(crops uint8 [M,S,S,3], kept row indices [M]) of the photos' largest faces; cached per CSV content
    in `cache_dir` (None: not cached)."""
    from runtime.detector import FaceDetector

    cache = _cache_file(table, size, margin, cache_dir, stem) if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            log.info("face crops from cache %s", cache)
            return stored["crops"], stored["rows"]
    crops, rows = [], []
    with FaceDetector("full_range", running_mode="image") as detector, \
            Progress(f"{stem}: detecting faces", log, total=len(table), unit="photos") as bar:
        for index, path in enumerate(table.paths):
            crop = largest_face_crop(detector, read_image_rgb(path), size, margin)
            if crop is not None:
                crops.append(crop)
                rows.append(index)
            bar.update(note=f"{len(rows)} faces")
    if not rows:
        raise DataError(f"{stem}: the detector found no face in any of its {len(table)} photos")
    if len(rows) < len(table):
        log.warning("%s: no face found in %d of %d photos; those rows are left out", stem, len(table) - len(rows), len(table))
    crops_array, rows_array = np.stack(crops), np.asarray(rows, dtype=np.int64)
    if cache is None:
        return crops_array, rows_array
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, crops=crops_array, rows=rows_array)
    tmp.replace(cache)  # complete or absent
    return crops_array, rows_array


class FaceDataset(Dataset):
    """Samples (uint8 [S,S,3] RGB crop, long[3] labels); `transform` maps a uint8 CHW tensor to one."""

    def __init__(self, table: LabelTable, size: int, crops: np.ndarray | None = None, transform=None):
        self.table, self.size, self.crops, self.transform = table, size, crops, transform

    def __len__(self) -> int:
        return len(self.table)

    def crop(self, index: int) -> np.ndarray:
        if self.crops is not None:
            return self.crops[index]
        return resize_chip(read_image_rgb(self.table.paths[index]), self.size)

    def __getitem__(self, index: int):
        image = torch.from_numpy(np.ascontiguousarray(self.crop(index)))
        if self.transform is not None:
            image = self.transform(image.permute(2, 0, 1)).permute(1, 2, 0).contiguous()
        return image, torch.from_numpy(self.table.labels[index])


def load_source(source: DataSource, size: int, margin: float, cache_dir: Path | None, transform=None) -> FaceDataset:
    table = read_labels(source.csv, source.root, source.name)
    if source.kind == "crops":
        return FaceDataset(table, size, transform=transform)
    crops, rows = detect_and_crop(table, size, margin, cache_dir, Path(source.csv).stem)
    kept = LabelTable([table.paths[i] for i in rows], table.labels[rows], [table.datasets[i] for i in rows])
    return FaceDataset(kept, size, crops=crops, transform=transform)


def load_sources(sources: list[DataSource], size: int, margin: float, cache_dir: Path, transform=None) -> FaceDataset:
    """Several CSVs mixed into one data set (the thesis trains on four at once)."""
    parts = [load_source(s, size, margin, cache_dir, transform) for s in sources]
    if len(parts) == 1:
        return parts[0]
    table = concat([p.table for p in parts])
    if all(p.crops is None for p in parts):
        return FaceDataset(table, size, transform=transform)
    # mixed kinds: materialise chips too, so one array serves every row
    crops = np.concatenate([p.crops if p.crops is not None else np.stack([p.crop(i) for i in range(len(p))]) for p in parts])
    return FaceDataset(table, size, crops=crops, transform=transform)


def valid_counts(labels: np.ndarray) -> dict[str, int]:
    return {task: int((labels[:, i] != MISSING).sum()) for i, task in enumerate(THESIS_TASKS)}


def log_summary(name: str, dataset: FaceDataset) -> None:
    counts = valid_counts(dataset.table.labels)
    log.info("%s: %d faces; labelled: %s", name, len(dataset), ", ".join(f"{t} {n}" for t, n in counts.items()))
