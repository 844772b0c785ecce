"""`<run.out>/curves.png` beside history.json: the loss and each task's validation accuracy per epoch.

Drawn on matplotlib's Agg canvas directly (no pyplot), so training never touches a display or pyplot's global
state; written through a temporary file, so the PNG under its name is always a whole one.
"""
from __future__ import annotations

import os
from pathlib import Path

CURVES = "curves.png"


def save_curves(history: list[dict], path: Path) -> Path:
    """`history`: Trainer's per-epoch dicts (epoch, train_loss, val_loss, val_accuracy {task: fraction})."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [entry["epoch"] for entry in history]
    validated = any(entry["val_accuracy"] for entry in history)
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    loss, accuracy = figure.subplots(1, 2)
    loss.plot(epochs, [entry["train_loss"] for entry in history], "o-", label="train (weighted)")
    if validated:
        loss.plot(epochs, [entry["val_loss"] for entry in history], "o-", label="validation")
        for task in sorted({task for entry in history for task in entry["val_accuracy"]}):
            accuracy.plot(epochs, [entry["val_accuracy"].get(task, float("nan")) for entry in history], "o-",
                          label=task.lower())
        accuracy.legend(fontsize=8)
    else:
        accuracy.text(0.5, 0.5, "no validation set", ha="center", va="center", transform=accuracy.transAxes)
    loss.set(title="loss", xlabel="epoch")
    loss.legend(fontsize=8)
    accuracy.set(title="validation accuracy", xlabel="epoch", ylim=(0, 1))
    for axes in (loss, accuracy):
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    figure.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)
    return path
