"""ONNX Runtime execution providers from config: CUDA and TensorRT options, profile shapes, clear errors.

- TensorRT EP: FP16 (`classifier.fp16`), engine and timing caches under `classifier.cache_dir`, one
  optimisation profile over the batch axis (min 1, opt `classifier.opt_batch`, max `classifier.max_batch`),
  LayerNorm FP32 fallback. `classifier.provider_options[<provider>]` overrides any of these keys.
- A provider this onnxruntime build lacks is an error that names what to install. ORT itself only logs
  "EP Error ... Falling back" when a provider fails to load (missing CUDA/TensorRT libraries), so the
  session's real providers are checked after it is made. CPU is used instead only when
  `classifier.cpu_fallback` is true, and then with a warning in the log.
Option names: ONNX Runtime's TensorRT and CUDA execution-provider documentation (onnxruntime.ai/docs/execution-providers).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from runtime.backends import BackendError
from runtime.config import ClassifierConfig
from runtime.metadata import ModelInfo

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)

INSTALL_HINTS = {
    TENSORRT: "onnxruntime-gpu built with TensorRT (desktop: `pip install onnxruntime-gpu` and TensorRT 10 libraries "
              "on the library path; Jetson: NVIDIA's Jetson build of onnxruntime-gpu, see README 'Jetson and TensorRT')",
    CUDA: "onnxruntime-gpu (desktop: `pip install onnxruntime-gpu` with CUDA 12 and cuDNN 9; Jetson: NVIDIA's Jetson "
          "build, see README 'Jetson and TensorRT'); uninstall the CPU-only `onnxruntime` package, which shadows it",
}


class ProviderError(BackendError):
    """A configured execution provider is missing or did not load, and CPU fallback is not allowed."""


@dataclass(frozen=True)
class ProfileShapes:
    """One TensorRT optimisation profile over the batch axis of the NHWC uint8 input."""

    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profile_shapes(info: ModelInfo, max_batch: int, opt_batch: int) -> ProfileShapes:
    """min batch 1, opt `opt_batch` (the usual number of faces per round, capped at max), max `max_batch`."""
    if max_batch < 1:
        raise ValueError(f"max batch {max_batch} < 1")
    size, opt = info.input_size, min(max(1, opt_batch), max_batch)
    return ProfileShapes(info.input_name, (1, size, size, 3), (opt, size, size, 3), (max_batch, size, size, 3))


def trt_shape_string(name: str, shape: tuple[int, ...]) -> str:
    return f"{name}:{'x'.join(str(d) for d in shape)}"  # ORT's "images:1x336x336x3"


def cache_dir(config: ClassifierConfig) -> Path:
    return Path(config.cache_dir).expanduser()


def tensorrt_options(info: ModelInfo | None, config: ClassifierConfig) -> dict:
    if info is None:
        raise ValueError("the TensorRT EP options need the model's metadata (input name and size)")
    shapes = profile_shapes(info, config.max_batch, config.opt_batch)
    cache = str(cache_dir(config))
    return {
        "device_id": 0,
        # An fp16 model is FP16 by its own types; the flag lets TensorRT pick FP16 kernels in an fp32 model.
        "trt_fp16_enable": bool(config.fp16 and info.precision == "fp32"),
        "trt_layer_norm_fp32_fallback": True,  # a decomposed LayerNorm overflows in FP16
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,
        "trt_profile_min_shapes": trt_shape_string(shapes.input_name, shapes.min),
        "trt_profile_opt_shapes": trt_shape_string(shapes.input_name, shapes.opt),
        "trt_profile_max_shapes": trt_shape_string(shapes.input_name, shapes.max),
        "trt_builder_optimization_level": 3,
    }


def cuda_options(config: ClassifierConfig) -> dict:
    return {"device_id": 0, "arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC"}


def default_options(name: str, info: ModelInfo | None, config: ClassifierConfig) -> dict:
    if name == TENSORRT:
        return tensorrt_options(info, config)
    if name == CUDA:
        return cuda_options(config)
    return {}


def providers_from_config(info: ModelInfo | None, config: ClassifierConfig, available: list[str] | None = None) -> list:
    """[(provider, options)] for `InferenceSession(providers=...)`, in the configured order. `info` (the
    model's metadata) is needed only for the TensorRT EP's profile shapes.

    `available` defaults to `onnxruntime.get_available_providers()` (providers compiled into this build)."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    chosen = []
    for name in config.providers:
        if name not in available:
            message = (f"classifier.providers: {[name]} not available in this onnxruntime build (available: {available}); "
                       f"install {INSTALL_HINTS.get(name, 'an onnxruntime build that has it')}")
            if not config.cpu_fallback:
                raise ProviderError(message)
            log.warning("%s; classifier.cpu_fallback is on: going on without it", message)
            continue
        options = default_options(name, info, config) | config.provider_options.get(name, {})
        chosen.append((name, options))
    if any(name == TENSORRT for name, _ in chosen):
        cache_dir(config).mkdir(parents=True, exist_ok=True)
    if config.cpu_fallback and all(name != CPU for name, _ in chosen):
        chosen.append((CPU, {}))
    if not chosen:
        raise ProviderError(f"classifier.providers: none of {config.providers} is available (this build has {available})")
    return chosen


def check_session_providers(session_providers: list[str], config: ClassifierConfig) -> None:
    """After the session is made: a configured GPU provider that did not load is an error unless fallback is on."""
    lost = [name for name in config.providers if name in GPU_PROVIDERS and name not in session_providers]
    if not lost:
        return
    message = (f"classifier.providers: {lost} did not load, the session runs on {session_providers} (onnxruntime "
               f"logged why above: usually missing or mismatched CUDA/cuDNN/TensorRT libraries); "
               f"needs {'; '.join(INSTALL_HINTS[n] for n in lost)}")
    if not config.cpu_fallback:
        raise ProviderError(message)
    log.warning("%s; classifier.cpu_fallback is on: running on %s", message, session_providers)
