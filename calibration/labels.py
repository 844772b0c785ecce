"""Labels for temperature fitting, from either CSV layout, checked against the model's tasks and labels.

- thesis layout: `Path,Gender,Age,Ethnicity,Facial Emotion,Identity` (an unnamed leading index column
  is allowed); class indices in the thesis order; -100, -100.0, NaN or empty = no label for that task;
- `path,task,label`: `label` is a class index or a label name (case-insensitive, so fer2013 folder
  names like `happy` map one to one), -100 = no label; task `age_years` takes an age in years, mapped to
  its age group.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from calibration.errors import CalibrationError
from runtime.metadata import ModelInfo

THESIS_COLUMNS = {"gender": "Gender", "age": "Age", "emotion": "Facial Emotion"}
MISSING = -100
AGE_YEARS = "age_years"


@dataclass(frozen=True)
class Label:
    path: str  # relative to the image root
    task: str
    index: int  # class index in the model's label order


def read_labels(csv_path: Path, info: ModelInfo) -> list[Label]:
    if not csv_path.is_file():
        raise CalibrationError(f"label file {csv_path} not found")
    with csv_path.open(newline="") as file:
        rows = list(csv.reader(file))
    if not rows:
        raise CalibrationError(f"{csv_path} is empty")
    header = [name.strip() for name in rows[0]]
    lowered = [name.lower() for name in header]
    if "path" in lowered and any(c.lower() in lowered for c in THESIS_COLUMNS.values()):
        labels = _thesis_rows(csv_path, header, rows[1:], info)
    elif lowered[:3] == ["path", "task", "label"]:
        labels = _task_rows(csv_path, rows[1:], info)
    else:
        raise CalibrationError(f"{csv_path}: header {header} is neither the thesis layout "
                               "(Path,Gender,Age,…,Facial Emotion) nor path,task,label")
    if not labels:
        raise CalibrationError(f"{csv_path}: no labels for the model's tasks {info.task_names} (all missing)")
    return labels


def _thesis_rows(csv_path: Path, header: list[str], rows: list[list[str]], info: ModelInfo) -> list[Label]:
    lowered = [name.lower() for name in header]
    path_column = lowered.index("path")
    columns = {task: lowered.index(name.lower()) for task, name in THESIS_COLUMNS.items() if name.lower() in lowered}
    usable = {task: column for task, column in columns.items() if task in info.task_names}
    if not usable:
        raise CalibrationError(f"{csv_path}: columns for tasks {sorted(columns)}, but the model has tasks "
                               f"{info.task_names}")
    labels = []
    for line, row in enumerate(rows, 2):
        if not any(cell.strip() for cell in row):
            continue
        for task, column in usable.items():
            value = row[column].strip() if column < len(row) else ""
            index = _thesis_index(value, csv_path, line, header[column])
            if index is not None:
                labels.append(Label(row[path_column].strip(), task, _check_index(index, task, info, csv_path, line)))
    return labels


def _thesis_index(value: str, csv_path: Path, line: int, column: str) -> int | None:
    if value == "" or value.lower() == "nan":
        return None
    try:
        number = float(value)
    except ValueError:
        raise CalibrationError(f"{csv_path}:{line}: {column} {value!r} is not a class index "
                               "(the thesis layout holds indices; -100 = missing)") from None
    if number == MISSING:
        return None
    if not number.is_integer():
        raise CalibrationError(f"{csv_path}:{line}: {column} {value!r} is not a whole class index")
    return int(number)


def _task_rows(csv_path: Path, rows: list[list[str]], info: ModelInfo) -> list[Label]:
    labels = []
    for line, row in enumerate(rows, 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 3:
            raise CalibrationError(f"{csv_path}:{line}: expected path,task,label, got {row}")
        path, task, value = (cell.strip() for cell in row[:3])
        task = task.lower()
        if _is_missing(value):  # -100 means "no label" here too, as in the thesis layout
            continue
        if task == AGE_YEARS and "age" in info.task_names:
            labels.append(Label(path, "age", age_group(value, info.task("age").labels, csv_path, line)))
            continue
        if task not in info.task_names:
            raise CalibrationError(f"{csv_path}:{line}: task {task!r} is not one of the model's tasks "
                                   f"{info.task_names}" + (f" (or {AGE_YEARS})" if "age" in info.task_names else ""))
        labels.append(Label(path, task, _label_index(value, task, info, csv_path, line)))
    return labels


def _is_missing(value: str) -> bool:
    try:
        return float(value) == MISSING
    except ValueError:
        return False


def _label_index(value: str, task: str, info: ModelInfo, csv_path: Path, line: int) -> int:
    names = [name.lower() for name in info.task(task).labels]
    if value.lower() in names:
        return names.index(value.lower())
    if re.fullmatch(r"-?\d+", value):
        return _check_index(int(value), task, info, csv_path, line)
    raise CalibrationError(f"{csv_path}:{line}: unknown {task} label {value!r}; the model's labels are "
                           f"{list(info.task(task).labels)} (or their indices 0-{len(names) - 1})")


def _check_index(index: int, task: str, info: ModelInfo, csv_path: Path, line: int) -> int:
    count = len(info.task(task).labels)
    if not 0 <= index < count:
        raise CalibrationError(f"{csv_path}:{line}: {task} class index {index} is outside 0-{count - 1} "
                               f"({list(info.task(task).labels)})")
    return index


def age_group(value: str, groups: tuple[str, ...], csv_path: Path | str = "", line: int = 0) -> int:
    """The index of the group ("0-2", …, "70+") holding an age in years (whole years: 2.9 → "0-2")."""
    try:
        years = float(value)
    except ValueError:
        years = math.nan
    if not math.isfinite(years) or years < 0:
        raise CalibrationError(f"{csv_path}:{line}: age {value!r} is not an age in years")
    for index, group in enumerate(groups):
        low, high = _bounds(group)
        if low <= math.floor(years) <= high:
            return index
    raise CalibrationError(f"{csv_path}:{line}: age {value!r} falls in none of the model's age groups {list(groups)}")


def _bounds(group: str) -> tuple[float, float]:
    if match := re.fullmatch(r"(\d+)\s*-\s*(\d+)", group):
        return float(match[1]), float(match[2])
    if match := re.fullmatch(r"(\d+)\s*\+", group):
        return float(match[1]), math.inf
    raise CalibrationError(f"age group {group!r} is not of the form 'a-b' or 'a+'")
