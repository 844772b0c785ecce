"""Inference backends: one batched run of a facecue model (design.md, "The model artefact").

A backend takes uint8 [N, S, S, 3] RGB face crops and returns float32 logits [N, C] per task. The
classifier thread only sees this protocol, so a TensorRT-engine backend can be added beside ONNX Runtime.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.config import ClassifierConfig, ConfigError
from runtime.metadata import ModelInfo

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """The model cannot be loaded or run with this backend."""


class Backend(Protocol):
    info: ModelInfo
    max_batch: int

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def cancel(backend: Backend) -> None:
    """Abort the backend's running inference at shutdown, when it can (optional `cancel()` method)."""
    cancel_method = getattr(backend, "cancel", None)
    if cancel_method is not None:
        cancel_method()


def describe(backend: Backend) -> str:
    """What runs the model, e.g. "openvino CPU bf16 (auto: OpenVINO installed on an x86_64 CPU)"."""
    return getattr(backend, "description", None) or getattr(backend, "label", None) or type(backend).__name__


def inference_precision(backend: Backend) -> str:
    """The precision the float layers run in: the backend's (e.g. OpenVINO's bf16) or the model's own."""
    return getattr(backend, "precision", None) or backend.info.precision


def open_backend(model_path: str | Path, config: ClassifierConfig) -> Backend:
    """The backend that `config.backend` names (`auto`: runtime/backends/auto.py), with the model loaded."""
    reason = "classifier.backend"
    if config.backend == "auto":
        from runtime.backends.auto import choose_backend

        choice = choose_backend(model_path, config)
        reason = f"auto: {choice.reason}"
        log.info("classifier.backend auto: %s (%s)", choice.backend, choice.reason)
        config = replace(choice.config, backend=choice.backend)
    backend = _open(model_path, config)
    label = getattr(backend, "label", None) or " ".join([config.backend, *getattr(config, "providers", [])[:1]]
                                                        if config.backend == "onnxruntime" else [config.backend])
    backend.description = f"{label} ({reason})"
    return backend


def _open(model_path: str | Path, config: ClassifierConfig) -> Backend:
    if config.backend == "openvino":
        from runtime.backends.openvino import OpenVinoBackend  # imports openvino when opened

        return OpenVinoBackend(model_path, config)
    if config.backend == "onnxruntime":
        from runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_path, config)
    if config.backend == "tensorrt":
        from runtime.backends.tensorrt import TensorRTBackend  # imports tensorrt and cuda-python when opened

        return TensorRTBackend(model_path, config)
    raise ConfigError(f"classifier.backend: unknown backend {config.backend!r} (known: auto, onnxruntime, openvino, tensorrt)")
