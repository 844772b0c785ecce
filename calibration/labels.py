"""Labels for temperature fitting: runtime.labels reads the CSV (any of its layouts), this module keeps the
model's tasks and maps the thesis label order onto the model's."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calibration.errors import CalibrationError
from runtime.labels import MISSING, LabelsError, read_label_csv
from runtime.metadata import TASK_ORDER, THESIS_LABELS, ModelInfo


@dataclass(frozen=True)
class Label:
    path: str  # relative to the image root
    task: str
    index: int  # class index in the model's label order


def read_labels(csv_path: Path, info: ModelInfo) -> list[Label]:
    """One Label per labelled (file, task) for the model's tasks, row by row in the model's task order."""
    try:
        table = read_label_csv(csv_path)
    except LabelsError as error:
        raise CalibrationError(str(error)) from None
    tasks = [task for task in info.task_names if task in table.tasks]
    if not tasks:
        raise CalibrationError(f"{csv_path}: columns for tasks {list(table.tasks)}, but the model has tasks "
                               f"{info.task_names}")
    to_model = {task: model_indices(task, info) for task in tasks}
    labels = [Label(path, task, to_model[task][row[TASK_ORDER.index(task)]])
              for path, row in zip(table.paths, table.labels) for task in tasks
              if row[TASK_ORDER.index(task)] != MISSING]
    if not labels:
        raise CalibrationError(f"{csv_path}: no labels for the model's tasks {info.task_names} (all missing)")
    return labels


def model_indices(task: str, info: ModelInfo) -> list[int]:
    """Thesis index → the model's index of the same label name (the same order for every facecue model)."""
    model = [name.lower() for name in info.task(task).labels]
    missing = [name for name in THESIS_LABELS[task] if name.lower() not in model]
    if missing:
        raise CalibrationError(f"the model's {task} labels {list(info.task(task).labels)} lack {missing}; label "
                               f"files are read in the thesis' labels {THESIS_LABELS[task]}")
    return [model.index(name.lower()) for name in THESIS_LABELS[task]]
