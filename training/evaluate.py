"""`python -m training.evaluate (--onnx MODEL | --checkpoint DIR) --labels CSV [--labels CSV ...]
(--images ROOT | --crops ROOT) [--out DIR]`: the thesis' metrics on labelled faces.

Per task and per data set (a `Dataset` column, else the CSV's file name) and over all: accuracy and
balanced accuracy (mean per-class recall over the classes present, as the thesis reports), confusion
matrices as PNG, and one JSON report. `--onnx` runs the exported model in ONNX Runtime; `--checkpoint`
builds the PyTorch model from a training output directory (its training.json says how) via export/.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # first: without the export extra, one line instead of an import traceback
    from facecue.cli import run_module

    sys.exit(run_module("training.evaluate", "python -m training.evaluate", "export"))

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from export.heads import THESIS_TASKS
from runtime.faces import add_face_arguments
from runtime.metadata import THESIS_LABELS
from training.config import DataSource
from training.data import MISSING, DataError, load_source
from facecue import interrupts
from facecue.progress import Progress

log = logging.getLogger(__name__)


def task_metrics(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict:
    """accuracy, balanced accuracy and the confusion matrix (rows: true class) over valid labels."""
    valid = true != MISSING
    true, predicted = true[valid], predicted[valid]
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    support = confusion.sum(1)
    present = support > 0
    recall = np.diag(confusion)[present] / support[present]
    return {"n": int(valid.sum()), "accuracy": float((true == predicted).mean()) if len(true) else None,
            "balanced_accuracy": float(recall.mean()) if present.any() else None, "confusion": confusion.tolist()}


def report(labels: np.ndarray, predictions: dict[str, np.ndarray], datasets: list[str]) -> dict:
    """{task: {"all" | dataset: metrics}} for each predicted task with at least one label."""
    names = np.asarray(datasets)
    result = {}
    for task, predicted in predictions.items():
        column = labels[:, THESIS_TASKS.index(task.capitalize())]
        if not (column != MISSING).any():
            continue
        groups = {"all": np.ones(len(column), bool)} | {d: names == d for d in sorted(set(datasets))}
        k = len(THESIS_LABELS[task])
        result[task] = {g: task_metrics(column[m], predicted[m], k) for g, m in groups.items()
                        if (column[m] != MISSING).any()}
    return result


def save_confusion_png(confusion: list[list[int]], labels: list[str], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    figure, axes = plt.subplots(figsize=(1 + 0.6 * len(labels), 1 + 0.55 * len(labels)))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    for (i, j), value in np.ndenumerate(matrix):
        axes.text(j, i, str(value), ha="center", va="center", fontsize=7,
                  color="white" if value > matrix.max() / 2 else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def predict_onnx(path: str, input_name: str, crops: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = {n: [] for n in names}
    with Progress(f"evaluating {Path(path).name}", log, total=len(crops), unit="faces") as bar:
        for start in range(0, len(crops), batch):
            for name, value in zip(names, session.run(None, {input_name: crops[start:start + batch]})):
                outputs[name].append(value.argmax(1))
            bar.update(len(crops[start:start + batch]))
    return {n: np.concatenate(v) for n, v in outputs.items()}


def checkpoint_model(directory: Path, backbone: str | None, weights: str | None):
    """(the eval-mode PyTorch model of a training output (`<out>/best`), built the way export builds it;
    the crop margin it was trained with)."""
    from export.adapters import ADAPTER_WEIGHTS, CUSTOM_LAYERS
    from export.build import build_model
    from training.checkpoint import BACKBONE_WEIGHTS, TRAINING_JSON

    summary_path = directory / TRAINING_JSON
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    backbone = backbone or summary.get("config", {}).get("model", {}).get("backbone")
    if backbone is None:
        raise DataError(f"{directory}: no {TRAINING_JSON} to say the backbone; pass --backbone")
    if weights is None:
        weights = str(directory / BACKBONE_WEIGHTS) if (directory / BACKBONE_WEIGHTS).is_file() else summary.get("base_weights")
    adapters = directory if (directory / ADAPTER_WEIGHTS).is_file() else None
    heads = None if adapters else directory / CUSTOM_LAYERS
    margin = float(summary.get("config", {}).get("data", {}).get("crop_margin", 0.0))
    return build_model(backbone, weights=weights, adapters=adapters, heads=heads), margin


def predict_torch(model, crops: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    import torch

    outputs = {n: [] for n in model.task_names}
    with torch.no_grad(), Progress("evaluating the checkpoint", log, total=len(crops), unit="faces") as bar:
        for start in range(0, len(crops), batch):
            for name, value in zip(model.task_names, model(torch.from_numpy(crops[start:start + batch]))):
                outputs[name].append(value.argmax(1).numpy())
            bar.update(len(crops[start:start + batch]))
    return {n: np.concatenate(v) for n, v in outputs.items()}


def load_faces(csvs: list[str], root: str, kind: str, size: int, margin: float):
    """(crops uint8 [N,S,S,3], labels [N,3], data-set names) over all CSVs; photos are not cached."""
    crops, labels, names = [], [], []
    for csv_path in csvs:
        dataset = load_source(DataSource(csv=csv_path, root=root, kind=kind), size, margin, cache_dir=None)
        crops.append(np.stack([dataset.crop(i) for i in range(len(dataset))]))
        labels.append(dataset.table.labels)
        names += dataset.table.datasets
    return np.concatenate(crops), np.concatenate(labels), names


def print_table(result: dict) -> None:
    print(f"{'task':8} {'data set':24} {'n':>6} {'accuracy':>9} {'balanced':>9}")
    for task, groups in result.items():
        for group, m in groups.items():
            print(f"{task:8} {group:24} {m['n']:6d} {m['accuracy']:9.4f} {m['balanced_accuracy']:9.4f}")


def main(argv=None) -> int:
    from runtime.faces import FacesError
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__, epilog=(
        "example: facecue evaluate --onnx build/model.onnx --labels labels.csv --crops ROOT --out eval"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    model_group = parser.add_mutually_exclusive_group(required=True)
    model_group.add_argument("--onnx", help="an exported facecue ONNX model (ONNX Runtime, CPU)")
    model_group.add_argument("--checkpoint", help="a training output directory (<run.out>/best)")
    parser.add_argument("--labels", action="append", required=True, help="label CSV, any layout of README 'Labels' (repeatable)")
    add_face_arguments(parser, what="the root of the labelled ")
    parser.add_argument("--backbone", help="--checkpoint only: override the backbone in training.json")
    parser.add_argument("--weights", help="--checkpoint only: override the base weights in training.json")
    parser.add_argument("--out", default="eval", help="folder for report.json and confusion PNGs (default eval/)")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    from export.cli import setup_logging
    from export.config import ConfigError
    from export.errors import CheckpointError
    from runtime.metadata import ModelMetadataError, read_model_info

    setup_logging()
    try:
        if args.onnx:
            info = read_model_info(args.onnx)
            size, margin, model = info.input_size, info.crop_margin, None
        else:
            model, margin = checkpoint_model(Path(args.checkpoint), args.backbone, args.weights)
            size = model.config.image_size
        root, kind = (args.images, "images") if args.images else (args.crops, "crops")
        crops, labels, datasets = load_faces(args.labels, root, kind, size, margin)
        predictions = (predict_onnx(args.onnx, info.input_name, crops, args.batch) if args.onnx
                       else predict_torch(model, crops, args.batch))
    except (DataError, CheckpointError, ConfigError, ModelMetadataError, FileNotFoundError, FacesError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    result = report(labels, predictions, datasets)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for task, groups in result.items():
        for group, metrics in groups.items():
            save_confusion_png(metrics["confusion"], THESIS_LABELS[task], f"{task} — {group} (n={metrics['n']})",
                               out / f"confusion_{task}_{group}.png")
    document = {"model": args.onnx or args.checkpoint, "labels": args.labels, "faces": len(crops), "tasks": result}
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(document, indent=2))
    interrupts.check()
    tmp.replace(out / "report.json")
    print_table(result)
    print(f"wrote {out / 'report.json'} and {sum(len(g) for g in result.values())} confusion matrices")
    return 0

