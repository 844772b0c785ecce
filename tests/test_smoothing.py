"""Smoothing as design.md defines it, checked against numbers computed by hand."""
import math

import numpy as np
import pytest

from runtime.config import ConfigError, SmoothingConfig
from runtime.metadata import THESIS_LABELS, parse_document, build_document
from runtime.smoothing import (
    CumulativeLogMean, Hysteresis, TimeConstantEma, TrackSmoother, calibrated_probs, smoothing_settings,
)


def thesis_info(temperatures=None):
    document = build_document(["age", "gender", "emotion"], 32, "test", "none")
    for task in document["tasks"]:
        task["temperature"] = (temperatures or {}).get(task["name"], 1.0)
    return parse_document(document)


def test_temperature_is_applied_before_softmax():
    logits = np.array([2.0, 0.0])
    # softmax([1, 0]) with T = 2: e / (e + 1)
    assert calibrated_probs(logits, 2.0)[0] == pytest.approx(math.e / (math.e + 1))


def test_cumulative_log_mean_weights_by_quality_and_renormalises():
    fusion = CumulativeLogMean(2)
    fusion.update(np.array([0.8, 0.2]), weight=1.0, timestamp=0.0)
    fused = fusion.update(np.array([0.2, 0.8]), weight=3.0, timestamp=1.0)
    # mean log p: (1·log .8 + 3·log .2) / 4 and (1·log .2 + 3·log .8) / 4, then softmax
    a = (math.log(0.8) + 3 * math.log(0.2)) / 4
    b = (math.log(0.2) + 3 * math.log(0.8)) / 4
    expected = math.exp(a) / (math.exp(a) + math.exp(b))
    assert fused[0] == pytest.approx(expected)
    assert fused.sum() == pytest.approx(1.0)


def test_ema_uses_the_time_constant_not_the_frame_rate():
    ema = TimeConstantEma(2, tau=1.0)
    assert ema.update(np.array([1.0, 0.0]), 1.0, timestamp=10.0)[0] == 1.0  # first reading taken as is
    fused = ema.update(np.array([0.0, 1.0]), 1.0, timestamp=10.5)
    alpha = 1 - math.exp(-0.5)
    assert fused[1] == pytest.approx(alpha)
    # two steps of 0.25 s reach the same value as one step of 0.5 s
    split = TimeConstantEma(2, tau=1.0)
    split.update(np.array([1.0, 0.0]), 1.0, 10.0)
    split.update(np.array([0.0, 1.0]), 1.0, 10.25)
    assert split.update(np.array([0.0, 1.0]), 1.0, 10.5)[1] == pytest.approx(alpha)


def test_hysteresis_needs_the_margin_for_the_minimum_time():
    hysteresis = Hysteresis(margin=0.1, min_time=0.5)
    assert not hysteresis.update(np.array([0.6, 0.4]), 0.0)  # first label shown, not a switch
    assert hysteresis.shown == 0
    assert not hysteresis.update(np.array([0.45, 0.55]), 1.0)  # leads by 0.10 - not more: waits
    assert not hysteresis.update(np.array([0.4, 0.6]), 1.1)  # leads by the margin: challenger since 1.1
    assert not hysteresis.update(np.array([0.5, 0.5]), 1.3)  # lost the lead: challenge reset
    assert not hysteresis.update(np.array([0.3, 0.7]), 1.4)
    assert not hysteresis.update(np.array([0.3, 0.7]), 1.8)  # 0.4 s < 0.5 s
    assert hysteresis.update(np.array([0.3, 0.7]), 1.9)  # 0.5 s: switches
    assert hysteresis.shown == 1
    assert not hysteresis.stable(2.0) and hysteresis.stable(2.4)


def test_track_smoother_age_in_years_and_events_fields():
    info = thesis_info({"gender": 2.0})
    smoother = TrackSmoother(info, smoothing_settings(SmoothingConfig(), info))
    age_logits = np.log(np.array([0, 0, 0, 0.5, 0.5, 0, 0, 0, 0]) + 1e-12)
    logits = {"age": age_logits, "gender": np.array([2.0, 0.0]), "emotion": np.zeros(7)}
    assert smoother.update(logits, quality=0.5, timestamp=0.0) == {}
    attributes = smoother.attributes()
    assert attributes.age_years == pytest.approx(0.5 * 25 + 0.5 * 35, abs=1e-6)
    gender = attributes.tasks["gender"]
    assert gender.label == "Male" and gender.confidence == pytest.approx(math.e / (math.e + 1), rel=1e-5)
    assert gender.labels == tuple(THESIS_LABELS["gender"]) and gender.observations == 1
    assert not smoother.ready(2)
    smoother.update(logits, quality=0.5, timestamp=0.1)
    assert smoother.ready(2) and smoother.attributes().observations == 2


def test_emotion_label_switch_is_reported_with_old_and_new():
    info = thesis_info()
    config = SmoothingConfig(emotion_tau=0.1, hysteresis_margin=0.1, hysteresis_time=0.25)
    smoother = TrackSmoother(info, smoothing_settings(config, info))
    base = {"age": np.zeros(9), "gender": np.zeros(2)}
    happy, sad = np.full(7, -5.0), np.full(7, -5.0)
    happy[3], sad[4] = 5.0, 5.0
    smoother.update({**base, "emotion": happy}, 1.0, 0.0)
    changes = [smoother.update({**base, "emotion": sad}, 1.0, t) for t in (0.5, 0.625, 0.75, 0.875)]
    assert [c for c in changes if c] == [{"emotion": ("Happy", "Sad")}]
    assert changes.index({"emotion": ("Happy", "Sad")}) == 2  # challenger from 0.5, shown at 0.75


def test_age_centroids_must_match_the_age_groups():
    info = thesis_info()
    with pytest.raises(ConfigError, match="age_centroids has 2 values but the model has 9 age groups"):
        smoothing_settings(SmoothingConfig(age_centroids=[1.0, 2.0]), info)
