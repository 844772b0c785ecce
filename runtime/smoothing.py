"""Per-track smoothing of the classifier's readings (design.md, "Smoothing").

- Logits are temperature-calibrated first: p = softmax(logits / T), T from the model's metadata.
- Age and gender do not change during a track: a quality-weighted mean of the log-probabilities over
  the whole track (cumulative), renormalised with a softmax.
- Emotion changes: an exponential moving average of the probabilities with a time constant τ in
  seconds, α = 1 − exp(−Δt/τ), so the result does not depend on the frame rate.
- The shown label switches only with hysteresis: the new top label must beat the shown one by a
  margin, continuously for a minimum time.
- Age in years = Σ p_i · c_i over the age groups, with the centroids c from config.
- A reading never raises: one with a missing task, the wrong width or a non-finite value is skipped
  (logged once per problem), so a broken model output cannot stop perception.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from runtime.config import ConfigError, SmoothingConfig
from runtime.metadata import ModelInfo, TaskSpec
from runtime.types import Attributes, TaskAttribute

log = logging.getLogger(__name__)
_warned: set[str] = set()  # problems already logged (once per process)

CUMULATIVE_TASKS = ("age", "gender")  # attributes of a person that do not change during a track
MIN_WEIGHT = 1e-3  # a crop of near-zero quality still counts a little (it is only sent when nothing better exists)


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.asarray(values, dtype=np.float64) - np.max(values)
    exp = np.exp(shifted)
    return exp / exp.sum()


def calibrated_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64) / temperature)


class CumulativeLogMean:
    """Quality-weighted mean of log-probabilities over all observations, as probabilities."""

    def __init__(self, classes: int):
        self.weighted_log_sum = np.zeros(classes)
        self.weight_sum = 0.0

    def update(self, probs: np.ndarray, weight: float, timestamp: float) -> np.ndarray:
        weight = max(weight, MIN_WEIGHT)
        self.weighted_log_sum += weight * np.log(np.clip(probs, 1e-12, 1.0))
        self.weight_sum += weight
        return softmax(self.weighted_log_sum / self.weight_sum)


class TimeConstantEma:
    """EMA of probabilities with α = 1 − exp(−Δt/τ); the first observation is taken as is."""

    def __init__(self, classes: int, tau: float):
        self.tau = tau
        self.probs = np.full(classes, 1.0 / classes)
        self.last_time: float | None = None

    def update(self, probs: np.ndarray, weight: float, timestamp: float) -> np.ndarray:
        if self.last_time is None:
            self.probs = np.asarray(probs, dtype=np.float64).copy()
        else:
            dt = max(timestamp - self.last_time, 0.0)
            alpha = 1.0 - math.exp(-dt / self.tau)
            self.probs = (1.0 - alpha) * self.probs + alpha * probs
        self.last_time = timestamp
        return self.probs


class Hysteresis:
    """Which label to show: a challenger must lead the shown label by `margin` for `min_time` seconds."""

    def __init__(self, margin: float, min_time: float):
        self.margin = margin
        self.min_time = min_time
        self.shown: int | None = None
        self.shown_since = 0.0
        self.challenger: int | None = None
        self.challenger_since = 0.0

    def update(self, probs: np.ndarray, timestamp: float) -> bool:
        """Returns True when the shown label switched (not for the first label)."""
        top = int(np.argmax(probs))
        if self.shown is None:
            self.shown, self.shown_since = top, timestamp
            return False
        if top == self.shown or probs[top] < probs[self.shown] + self.margin:
            self.challenger = None
            return False
        if self.challenger != top:
            self.challenger, self.challenger_since = top, timestamp
        if timestamp - self.challenger_since < self.min_time:
            return False
        self.shown, self.shown_since, self.challenger = top, timestamp, None
        return True

    def stable(self, timestamp: float) -> bool:
        return self.shown is not None and timestamp - self.shown_since >= self.min_time


@dataclass(frozen=True)
class SmoothingSettings:
    emotion_tau: float
    hysteresis_margin: float
    hysteresis_time: float
    age_centroids: tuple[float, ...]


class TaskSmoother:
    """One task of one track: calibration → fusion → hysteresis."""

    def __init__(self, spec: TaskSpec, settings: SmoothingSettings):
        self.spec = spec
        classes = len(spec.labels)
        if spec.name in CUMULATIVE_TASKS:
            self.fusion: CumulativeLogMean | TimeConstantEma = CumulativeLogMean(classes)
        else:
            self.fusion = TimeConstantEma(classes, settings.emotion_tau)
        self.hysteresis = Hysteresis(settings.hysteresis_margin, settings.hysteresis_time)
        self.probs = np.full(classes, 1.0 / classes)
        self.observations = 0
        self.last_time = 0.0

    def update(self, logits: np.ndarray, quality: float, timestamp: float) -> tuple[str | None, str] | None:
        """Fuse one reading; returns (old, new) shown label when it switched."""
        old = self.label
        probs = calibrated_probs(logits, self.spec.temperature)
        self.probs = self.fusion.update(probs, quality, timestamp)
        self.observations += 1
        self.last_time = timestamp
        return (old, self.label) if self.hysteresis.update(self.probs, timestamp) else None

    @property
    def label(self) -> str | None:
        shown = self.hysteresis.shown
        return None if shown is None else self.spec.labels[shown]

    def attribute(self) -> TaskAttribute:
        shown = self.hysteresis.shown
        return TaskAttribute(
            labels=self.spec.labels,
            probs=self.probs.astype(np.float32),
            label=self.label,
            confidence=0.0 if shown is None else float(self.probs[shown]),
            stable=self.hysteresis.stable(self.last_time),
            observations=self.observations,
        )


class TrackSmoother:
    """All tasks of one track, and the age estimate in years."""

    def __init__(self, info: ModelInfo, settings: SmoothingSettings):
        self.tasks = {spec.name: TaskSmoother(spec, settings) for spec in info.tasks}
        self.centroids = np.asarray(settings.age_centroids, dtype=np.float64)
        self.observations = 0

    def update(self, logits: dict[str, np.ndarray], quality: float, timestamp: float) -> dict[str, tuple[str | None, str]]:
        """Fuse one classification of this track; returns the shown labels that switched. A reading that
        cannot be used (see the module docstring) is skipped: nothing changes, {} is returned."""
        problem = self._problem(logits, quality, timestamp)
        if problem is not None:
            _warn_once(problem)
            return {}
        self.observations += 1
        changes = {}
        for name, task in self.tasks.items():
            change = task.update(np.asarray(logits[name], dtype=np.float64), float(quality), float(timestamp))
            if change is not None:
                changes[name] = change
        return changes

    def _problem(self, logits, quality, timestamp) -> str | None:
        """Why this reading cannot be fused, or None."""
        try:
            if not (math.isfinite(float(quality)) and math.isfinite(float(timestamp))):
                return f"non-finite quality {quality} or time {timestamp}"
            for name, task in self.tasks.items():
                if name not in logits:
                    return f"no {name!r} output in the reading (tasks {sorted(logits)})"
                values = np.asarray(logits[name], dtype=np.float64)
                if values.shape != (len(task.spec.labels),):
                    return (f"task {name!r}: a reading of shape {values.shape}, the model's metadata lists "
                            f"{len(task.spec.labels)} labels")
                if not np.all(np.isfinite(values)):
                    return f"task {name!r}: a reading with NaN or infinite logits"
        except (TypeError, ValueError) as error:
            return f"an unreadable reading ({type(error).__name__}: {error})"
        return None

    def ready(self, min_observations: int) -> bool:
        return all(task.observations >= min_observations for task in self.tasks.values())

    def attributes(self) -> Attributes:
        tasks = {name: task.attribute() for name, task in self.tasks.items()}
        return Attributes(tasks=tasks, age_years=self.age_years(), observations=self.observations)

    def age_years(self) -> float | None:
        age = self.tasks.get("age")
        if age is None or age.observations == 0:
            return None
        return float(np.dot(age.probs, self.centroids))


def _warn_once(problem: str) -> None:
    if problem not in _warned and len(_warned) < 64:  # bounded: a long run logs each kind of problem once
        _warned.add(problem)
        log.warning("smoothing: skipped %s (logged once)", problem)


def smoothing_settings(config: SmoothingConfig, info: ModelInfo) -> SmoothingSettings:
    """The settings for `info`'s tasks; the age centroids must match the model's age groups."""
    if "age" in info.task_names and len(config.age_centroids) != len(info.task("age").labels):
        raise ConfigError(
            f"smoothing.age_centroids has {len(config.age_centroids)} values but the model has "
            f"{len(info.task('age').labels)} age groups {list(info.task('age').labels)}"
        )
    return SmoothingSettings(
        emotion_tau=config.emotion_tau,
        hysteresis_margin=config.hysteresis_margin,
        hysteresis_time=config.hysteresis_time,
        age_centroids=tuple(config.age_centroids),
    )
