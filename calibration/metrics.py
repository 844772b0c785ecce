"""Calibration metrics on logits and labels: softmax, NLL, ECE, and the reliability diagram.

ECE (expected calibration error): samples are put in `bins` equal-width bins by their confidence (max
probability; bins are (lo, hi], the first includes 0); ECE = Σ_b (n_b / N) · |accuracy_b − mean confidence_b|.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


@dataclass
class ReliabilityBins:
    edges: np.ndarray  # bins + 1 edges over [0, 1]
    counts: np.ndarray
    accuracy: np.ndarray  # per bin; 0 where empty
    confidence: np.ndarray  # mean confidence per bin; 0 where empty


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> ReliabilityBins:
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (lo, hi]
    counts = np.bincount(index, minlength=bins)
    safe = np.maximum(counts, 1)
    return ReliabilityBins(edges, counts, np.bincount(index, correct, bins) / safe,
                           np.bincount(index, confidence, bins) / safe)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    r = reliability_bins(probs, labels, bins)
    return float((r.counts / r.counts.sum() * np.abs(r.accuracy - r.confidence)).sum())


def save_reliability_diagram(before: np.ndarray, after: np.ndarray, labels: np.ndarray, path: Path, title: str,
                             bins: int = 15) -> Path:
    """Accuracy per confidence bin before and after temperature scaling, against the diagonal."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfectly calibrated")
    for name, probs, color in (("before", before, "tab:red"), ("after", after, "tab:blue")):
        r = reliability_bins(probs, labels, bins)
        used = r.counts > 0
        ax.plot(r.confidence[used], r.accuracy[used], "o-", color=color,
                label=f"{name} (ECE {ece(probs, labels, bins):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
