"""One reader for label CSVs, used by temperature calibration, training and training.evaluate.

The layout is told from the header (names match case-insensitively, a space counts as `_`):
- thesis: `Path,Gender,Age,Ethnicity,Facial Emotion,Identity`, told by `Facial Emotion`, `Ethnicity` or
  `Identity`: class indices in the thesis order; -100, NaN or empty = no label; an unnamed leading index
  column is allowed;
- long: `path,task,label`, one label a row: task `age`/`gender`/`emotion` with a label name or a class
  index in the thesis order, or task `age_years` with an age in years;
- per image: `path` and named columns whose values are names or years, never codes:
  age: `age_group` (`10-19`, `70+`), else `age`, else `age_years` (a group name or an age in years);
  gender: `gender_name`, else `gender` (male/female, m/f, man/woman);
  emotion: `emotion`, else `emotion_7class` (names as in fer2013: angry, disgust, fear, ...);
  a `label` column with no other task column is emotion (fer2013's `path,label,usage`).
  A numeric gender or emotion is an error: codes differ between data sets (fer2013's emotion codes
  start at angry, the thesis' at Surprise), so only names are trusted.
A `dataset` column, where present, names each row's data set. Labels come out in the thesis order
(runtime.metadata.THESIS_LABELS); anything that does not fit is a LabelsError naming file, line and column.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.metadata import TASK_ORDER, THESIS_LABELS

MISSING = -100
AGE_YEARS = "age_years"
THESIS_MARKERS = ("facial_emotion", "ethnicity", "identity")
THESIS_COLUMNS = {"age": "age", "gender": "gender", "emotion": "facial_emotion"}
NAMED_COLUMNS = {"age": ("age_group", "age", "age_years"), "gender": ("gender_name", "gender"),
                 "emotion": ("emotion", "emotion_7class")}
# other spellings data sets use for the thesis' label names
ALIASES = {"gender": {"m": "Male", "man": "Male", "f": "Female", "woman": "Female"},
           "emotion": {"surprised": "Surprise", "fearful": "Fear", "disgusted": "Disgust", "happiness": "Happy",
                       "sadness": "Sad", "anger": "Angry"}}
ACCEPTED = ("accepted: the thesis layout (Path,Gender,Age,Ethnicity,Facial Emotion,Identity), path,task,label, "
            "or path with named columns (age_group/age, gender_name/gender, emotion/emotion_7class, or one label "
            "column of emotion names)")


class LabelsError(ValueError):
    """A label CSV that cannot be read; the message names the file (and line and column)."""


@dataclass
class LabelTable:
    paths: list[str]          # as written in the CSV, relative to the image root
    labels: np.ndarray        # int64 [N, 3]: age, gender, emotion (TASK_ORDER), thesis indices, MISSING = none
    datasets: list[str | None]  # the `dataset` column, None where there is none
    tasks: tuple[str, ...]    # the tasks the file has a column (long layout: a row) for
    layout: str               # "thesis", "long" or "per-image"

    def __len__(self) -> int:
        return len(self.paths)


def read_label_csv(csv_path: str | Path) -> LabelTable:
    """The labels of one CSV in whichever layout its header shows, in thesis indices."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise LabelsError(f"label CSV {csv_path} not found")
    with csv_path.open(newline="", encoding="utf-8-sig") as file:
        rows = list(csv.reader(file))
    if not rows:
        raise LabelsError(f"{csv_path} is empty")
    header = [_column_key(name) for name in rows[0]]
    layout, columns = detect_layout(header, rows[0], csv_path)
    body = [(line, row) for line, row in enumerate(rows[1:], 2) if any(cell.strip() for cell in row)]
    if not body:
        raise LabelsError(f"{csv_path}: no rows under the header")
    if layout == "long":
        return _long_rows(csv_path, header, body)
    return _wide_rows(csv_path, header, [name.strip() for name in rows[0]], columns, body, layout)


def detect_layout(header: list[str], raw: list[str], csv_path: Path) -> tuple[str, dict[str, int]]:
    """(layout, task → column index) from the header keys; an unknown or ambiguous header is a LabelsError."""
    found = f"{csv_path}: columns {[name.strip() for name in raw]}"
    if "path" not in header:
        raise LabelsError(f"{found} have no path column; {ACCEPTED}")
    named = {task: next(header.index(c) for c in names if c in header)
             for task, names in NAMED_COLUMNS.items() if any(c in header for c in names)}
    if "task" in header and "label" in header:
        if named or any(m in header for m in THESIS_MARKERS):
            raise LabelsError(f"{found} mix path,task,label with per-task columns (ambiguous); {ACCEPTED}")
        return "long", {}
    if any(m in header for m in THESIS_MARKERS):
        return "thesis", {t: header.index(c) for t, c in THESIS_COLUMNS.items() if c in header}
    if "label" in header:
        if named:
            raise LabelsError(f"{found}: a label column beside {sorted(named)} columns is ambiguous (a lone label "
                              f"column is read as emotion); {ACCEPTED}")
        return "per-image", {"emotion": header.index("label")}
    if not named:
        raise LabelsError(f"{found} name no task; {ACCEPTED}")
    return "per-image", named


def _column_key(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip().lower())


def _wide_rows(csv_path: Path, header: list[str], names: list[str], columns: dict[str, int], body,
               layout: str) -> LabelTable:
    """Thesis and per-image layouts: one row per image, one column per task."""
    path_column = header.index("path")
    dataset_column = header.index("dataset") if "dataset" in header else None
    parse = _thesis_value if layout == "thesis" else _named_value
    paths, labels, datasets = [], [], []
    for line, row in body:
        paths.append(_path(_cell(row, path_column), csv_path, line))
        values = [MISSING] * len(TASK_ORDER)
        for task, column in columns.items():
            where = f"{csv_path}:{line}, column {names[column]}"
            values[TASK_ORDER.index(task)] = parse(_cell(row, column), task, where)
        labels.append(values)
        dataset = _cell(row, dataset_column) if dataset_column is not None else ""
        datasets.append(dataset or None)
    tasks = tuple(t for t in TASK_ORDER if t in columns)
    return LabelTable(paths, np.asarray(labels, dtype=np.int64), datasets, tasks, layout)


def _long_rows(csv_path: Path, header: list[str], body) -> LabelTable:
    """`path,task,label`: one label per row, gathered into one row per image (in first-seen order)."""
    path_column, task_column, label_column = (header.index(name) for name in ("path", "task", "label"))
    rows: dict[str, list[int]] = {}
    tasks = set()
    for line, row in body:
        path, task = _path(_cell(row, path_column), csv_path, line), _cell(row, task_column).lower()
        value = _cell(row, label_column)
        where = f"{csv_path}:{line}, column label"
        if task == AGE_YEARS:
            task, index = "age", _age_years(value, where)
        elif task in TASK_ORDER:
            index = _name_or_index(value, task, where)
        else:
            raise LabelsError(f"{csv_path}:{line}: task {task!r} is not one of {', '.join(TASK_ORDER)} or {AGE_YEARS}")
        tasks.add(task)
        values = rows.setdefault(path, [MISSING] * len(TASK_ORDER))
        slot = TASK_ORDER.index(task)
        if index != MISSING and values[slot] not in (MISSING, index):
            raise LabelsError(f"{csv_path}:{line}: a second, different {task} label for {path}")
        if index != MISSING:
            values[slot] = index
    return LabelTable(list(rows), np.asarray(list(rows.values()), dtype=np.int64).reshape(-1, len(TASK_ORDER)),
                      [None] * len(rows), tuple(t for t in TASK_ORDER if t in tasks), "long")


def _cell(row: list[str], column: int) -> str:
    return row[column].strip() if column < len(row) else ""  # a short row: the missing cells are empty


def _path(value: str, csv_path: Path, line: int) -> str:
    if not value:
        raise LabelsError(f"{csv_path}:{line}: empty path")
    return value


def _is_missing(value: str) -> bool:
    if value == "" or value.lower() == "nan":
        return True
    try:
        return float(value) == MISSING
    except ValueError:
        return False


def _thesis_value(value: str, task: str, where: str) -> int:
    if _is_missing(value):
        return MISSING
    try:
        number = float(value)
    except ValueError:
        raise LabelsError(f"{where}: {value!r} is not a class index (the thesis layout holds indices in the thesis "
                          f"order; -100 = missing)") from None
    if not number.is_integer():
        raise LabelsError(f"{where}: {value!r} is not a whole class index")
    return _check_index(int(number), task, where)


def _named_value(value: str, task: str, where: str) -> int:
    if _is_missing(value):
        return MISSING
    if task == "age":
        return _age_years(value, where)
    index = _label_name(value, task)
    if index is not None:
        return index
    if re.fullmatch(r"-?\d+(\.0*)?", value):
        raise LabelsError(f"{where}: {value!r} is a numeric {task} code, and codes differ between data sets (UTKFace "
                          f"gender 0 = male; fer2013 emotion 0 = angry): give names ({_names(task)}), e.g. in a "
                          f"{NAMED_COLUMNS[task][0]} column, or use the thesis layout for thesis indices")
    raise LabelsError(f"{where}: unknown {task} label {value!r} ({_names(task)})")


def _name_or_index(value: str, task: str, where: str) -> int:
    """Long layout: a label name, or a class index in the thesis order."""
    if _is_missing(value):
        return MISSING
    index = _label_name(value, task)
    if index is not None:
        return index
    if re.fullmatch(r"-?\d+", value):
        return _check_index(int(value), task, where)
    raise LabelsError(f"{where}: unknown {task} label {value!r} ({_names(task)}, or a class index "
                      f"0..{len(THESIS_LABELS[task]) - 1})")


def _label_name(value: str, task: str) -> int | None:
    names = [name.lower() for name in THESIS_LABELS[task]]
    value = ALIASES.get(task, {}).get(value.lower(), value).lower()
    return names.index(value) if value in names else None


def _names(task: str) -> str:
    return ", ".join(THESIS_LABELS[task])


def _check_index(index: int, task: str, where: str) -> int:
    count = len(THESIS_LABELS[task])
    if not 0 <= index < count:
        raise LabelsError(f"{where}: {task} class index {index} is outside 0..{count - 1} "
                          f"({_names(task)}; -100 = missing)")
    return index


def _age_years(value: str, where: str) -> int:
    """An age group name ("10-19", "70+") or an age in years (whole years: 2.9 → "0-2") → its group's index."""
    if _is_missing(value):
        return MISSING
    groups = THESIS_LABELS["age"]
    if value.replace(" ", "") in groups:
        return groups.index(value.replace(" ", ""))
    try:
        years = float(value)
    except ValueError:
        years = math.nan
    if not math.isfinite(years) or years < 0:
        raise LabelsError(f"{where}: {value!r} is not an age in years or an age group ({', '.join(groups)})")
    for index, group in enumerate(groups):
        low, high = _bounds(group)
        if low <= math.floor(years) <= high:
            return index
    raise LabelsError(f"{where}: {value!r} falls in none of the age groups {groups}")


def _bounds(group: str) -> tuple[float, float]:
    if match := re.fullmatch(r"(\d+)-(\d+)", group):
        return float(match[1]), float(match[2])
    if match := re.fullmatch(r"(\d+)\+", group):
        return float(match[1]), math.inf
    raise ValueError(f"age group {group!r} is not of the form 'a-b' or 'a+'")
