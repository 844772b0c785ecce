"""`calibrate_temperatures`: model + labelled faces → per-task temperatures in the model's metadata.

Steps: read the labels (checked against the model's tasks and label names) → one crop per labelled
file (the runtime's crop) → the model's logits → fit T per task → reliability diagrams and the model
with the new document. Diagrams are written to a staging folder and moved, and the model is written
last through a temp file, so an error leaves nothing half-written.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration.compare import run_batches
from calibration.config import TemperatureConfig
from calibration.errors import CalibrationError
from calibration.faces import labelled_crops
from calibration.int8_model import session
from calibration.labels import read_labels
from calibration.metrics import save_reliability_diagram, softmax
from calibration.modelfile import model_info, read_header, staging_dir, write_with_document
from calibration.temperature import TaskFit, fit_task
from facecue.progress import Progress, progress

log = logging.getLogger(__name__)


@dataclass
class TemperatureResult:
    model: Path
    fits: list[TaskFit]
    plots: list[Path] = field(default_factory=list)
    skipped_files: int = 0

    def table(self) -> str:
        lines = [f"{'task':8} {'n':>6} {'T before':>9} {'T':>7} {'NLL before':>11} {'NLL after':>10} "
                 f"{'ECE before':>11} {'ECE after':>10}"]
        lines += [f"{f.task:8} {f.samples:>6} {f.temperature_before:9.3f} {f.temperature:7.3f} {f.nll_before:11.4f} "
                  f"{f.nll_after:10.4f} {f.ece_before:11.4f} {f.ece_after:10.4f}" for f in self.fits]
        lines.append(f"wrote {self.model}" + (f" and {len(self.plots)} reliability diagrams" if self.plots else ""))
        if self.skipped_files:
            lines.append(f"{self.skipped_files} labelled files had no usable face (see the log)")
        return "\n".join(lines)


def calibrate_temperatures(model_path: Path, labels_path: Path, root: Path, detect: bool, out_path: Path,
                           plots_dir: Path | None, config: TemperatureConfig) -> TemperatureResult:
    info = model_info(read_header(model_path), str(model_path))
    labels = read_labels(labels_path, info)
    paths = sorted({label.path for label in labels})
    faces = labelled_crops(info, root, paths, detect)
    with Progress("temperature: the model's logits", log, total=len(faces.crops), unit="crops") as bar:
        logits = run_batches(session(model_path), info.input_name, faces.crops, config.batch, bar)
    row_of = {path: row for row, path in enumerate(faces.paths)}
    fits, targets = [], {}
    for spec in progress(info.tasks, "temperature: fitting", log, unit="tasks"):
        rows = [(row_of[l.path], l.index) for l in labels if l.task == spec.name and l.path in row_of]
        if not rows:
            log.info("%s: no labels, temperature stays %.3f", spec.name, spec.temperature)
            continue
        if len(rows) < config.min_labels:
            raise CalibrationError(f"only {len(rows)} usable {spec.name} labels; a temperature needs at least "
                                   f"{config.min_labels} (temperature.min_labels)")
        index, target = (np.array(column) for column in zip(*rows))
        targets[spec.name] = (logits[spec.name][index], target)
        fits.append(fit_task(spec.name, logits[spec.name][index], target, spec.temperature,
                             config.min_temperature, config.max_temperature, config.ece_bins))
    if not fits:
        raise CalibrationError(f"none of the labelled files has a usable face for the model's tasks {info.task_names}")
    document = dict(info.document)
    document["tasks"] = [dict(task) for task in document["tasks"]]
    for fit in fits:
        task = next(t for t in document["tasks"] if t["name"] == fit.task)
        task["temperature"] = fit.temperature
        task["calibration"] = {"labels": labels_path.name, "samples": fit.samples, "nll": [fit.nll_before, fit.nll_after],
                               "ece": [fit.ece_before, fit.ece_after]}
    plots_dir = plots_dir or out_path.parent
    stem = out_path.name[:-len(".onnx")] if out_path.name.endswith(".onnx") else out_path.name
    plots = []
    with staging_dir(plots_dir / stem) as tmp:
        for fit in fits:
            task_logits, target = targets[fit.task]
            plots.append(save_reliability_diagram(softmax(task_logits, fit.temperature_before),
                                                  softmax(task_logits, fit.temperature), target,
                                                  tmp / f"{stem}.reliability-{fit.task}.png",
                                                  f"{fit.task}: T = {fit.temperature:.2f} (n = {fit.samples})",
                                                  config.ece_bins))
        write_with_document(model_path, out_path, document)
        plots = [path.replace(plots_dir / path.name) for path in plots]
    return TemperatureResult(out_path, fits, plots, len(faces.skipped))
