"""ONNX Runtime GPU providers from config: TensorRT/CUDA options, profile shapes, clear errors, CPU fallback."""
from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from runtime.backends import BackendError, open_backend
from runtime.backends.providers import (CPU, CUDA, TENSORRT, ProviderError, check_session_providers, profile_shapes,
                                        providers_from_config)
from runtime.config import ClassifierConfig, ConfigError, load_config
from runtime.metadata import read_model_info

GPU_CONFIG = dict(providers=[TENSORRT, CUDA, CPU], max_batch=8, opt_batch=4, cache_dir="CACHE")
ALL = [TENSORRT, CUDA, CPU]


@pytest.fixture(scope="module")
def info(tiny_model):
    return read_model_info(tiny_model)


def test_profile_shapes_follow_the_batch_settings(info):
    shapes = profile_shapes(info, max_batch=8, opt_batch=4)
    assert (shapes.input_name, shapes.min, shapes.opt, shapes.max) == ("images", (1, 32, 32, 3), (4, 32, 32, 3), (8, 32, 32, 3))
    assert profile_shapes(info, max_batch=2, opt_batch=4).opt == (2, 32, 32, 3)  # opt never exceeds max
    with pytest.raises(ValueError, match="max batch 0"):
        profile_shapes(info, max_batch=0, opt_batch=1)


def test_tensorrt_options_from_config(info, tmp_path):
    config = ClassifierConfig(**GPU_CONFIG | {"cache_dir": str(tmp_path / "trt")})
    chosen = dict(providers_from_config(info, config, available=ALL))
    trt = chosen[TENSORRT]
    assert trt["trt_profile_min_shapes"] == "images:1x32x32x3"
    assert trt["trt_profile_opt_shapes"] == "images:4x32x32x3"
    assert trt["trt_profile_max_shapes"] == "images:8x32x32x3"
    assert trt["trt_fp16_enable"] is True and trt["trt_layer_norm_fp32_fallback"] is True
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(tmp_path / "trt")
    assert trt["trt_engine_cache_enable"] and trt["trt_timing_cache_enable"]
    assert (tmp_path / "trt").is_dir()
    assert chosen[CUDA]["device_id"] == 0 and list(chosen) == ALL


def test_fp16_flag_only_for_fp32_models_and_user_options_win(info, tmp_path):
    fp16_info = type(info)(**{**info.__dict__, "precision": "fp16"})
    config = ClassifierConfig(**GPU_CONFIG | {"cache_dir": str(tmp_path),
                                              "provider_options": {TENSORRT: {"trt_builder_optimization_level": 5}}})
    trt = dict(providers_from_config(fp16_info, config, available=ALL))[TENSORRT]
    assert trt["trt_fp16_enable"] is False  # the model's own types decide
    assert trt["trt_builder_optimization_level"] == 5


def test_missing_provider_names_what_to_install(info):
    config = ClassifierConfig(providers=[TENSORRT, CPU])
    with pytest.raises(ProviderError, match=r"\['TensorrtExecutionProvider'\] not available.*onnxruntime-gpu"):
        providers_from_config(info, config, available=[CPU])
    with pytest.raises(ProviderError, match="CUDA 12 and cuDNN 9"):
        providers_from_config(info, ClassifierConfig(providers=[CUDA]), available=[CPU])


def test_cpu_fallback_is_logged_and_only_when_allowed(info, caplog):
    config = ClassifierConfig(providers=[CUDA], cpu_fallback=True)
    with caplog.at_level(logging.WARNING):
        assert providers_from_config(info, config, available=[CPU]) == [(CPU, {})]
    assert "cpu_fallback is on" in caplog.text
    with pytest.raises(ProviderError, match="did not load"):
        check_session_providers([CPU], ClassifierConfig(providers=[CUDA, CPU]))
    check_session_providers([CUDA, CPU], ClassifierConfig(providers=[CUDA, CPU]))  # loaded: fine


def test_real_session_on_this_build(tiny_model, caplog):
    """This machine's onnxruntime: GPU providers refused with a clear error, or used as configured."""
    if CUDA in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu installed here: the missing-provider path cannot be shown")
    with pytest.raises(BackendError, match="onnxruntime-gpu"):
        open_backend(tiny_model, ClassifierConfig(providers=[CUDA, CPU]))
    with caplog.at_level(logging.WARNING):
        backend = open_backend(tiny_model, ClassifierConfig(providers=[TENSORRT, CUDA], cpu_fallback=True))
    assert backend.session.get_providers() == [CPU] and "cpu_fallback is on" in caplog.text
    out = backend.run(np.zeros((2, 32, 32, 3), np.uint8))
    assert out["emotion"].shape == (2, 7)


@pytest.mark.skipif(CUDA not in ort.get_available_providers(), reason="needs onnxruntime-gpu and an NVIDIA GPU "
                    "(run scripts/gpu_check.py on a GPU machine)")
def test_cuda_provider_runs_the_tiny_model(tiny_model):
    backend = open_backend(tiny_model, ClassifierConfig(providers=[CUDA]))
    assert backend.session.get_providers()[0] == CUDA
    assert backend.run(np.zeros((1, 32, 32, 3), np.uint8))["age"].shape == (1, 9)


def test_config_keys_are_checked(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text("classifier: {backend: tensorrt, opt_batch: 0}\n")
    with pytest.raises(ConfigError, match="classifier.opt_batch"):
        load_config(path)
    path.write_text("classifier: {backend: tensorrtt}\n")
    with pytest.raises(ConfigError, match="classifier.backend"):
        load_config(path)
