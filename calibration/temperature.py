"""Temperature scaling: the one T per task that minimises the NLL of softmax(logits / T) on labelled data.

The NLL is convex in 1/T, hence unimodal in log T, so scipy's bounded 1-D minimiser (Brent's method,
`minimize_scalar(method="bounded")`) on log T finds the global minimum in a few dozen evaluations;
scipy is already a runtime dependency.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from calibration.metrics import ece, nll, softmax

log = logging.getLogger(__name__)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    result = minimize_scalar(lambda log_t: nll(logits, labels, math.exp(log_t)),
                             bounds=(math.log(low), math.log(high)), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


def at_bound(temperature: float, low: float, high: float, tolerance: float = 1e-3) -> bool:
    """T within `tolerance` (relative) of a bound: the bounded search stopped there, not at a minimum inside."""
    return abs(math.log(temperature / low)) < tolerance or abs(math.log(high / temperature)) < tolerance


@dataclass
class TaskFit:
    task: str
    samples: int
    temperature_before: float
    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


def fit_task(task: str, logits: np.ndarray, labels: np.ndarray, current: float, low: float, high: float,
             bins: int) -> TaskFit:
    """Fit T; the 'before' numbers use the model's current temperature, as the runtime does today."""
    temperature = fit_temperature(logits, labels, low, high)
    if at_bound(temperature, low, high):
        bound, key = (high, "max_temperature") if temperature > math.sqrt(low * high) else (low, "min_temperature")
        why = ("the logits say little about these labels (random weights, or labels that do not match the model?)"
               if bound == high else "the logits are far too flat for these labels")
        log.warning("%s: the fitted temperature stopped at its bound %g (temperature.%s): the best T may lie beyond "
                    "it; %s", task, bound, key, why)
    return TaskFit(task, len(labels), current, temperature,
                   nll(logits, labels, current), nll(logits, labels, temperature),
                   ece(softmax(logits, current), labels, bins), ece(softmax(logits, temperature), labels, bins))
