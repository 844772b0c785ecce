"""Inference backends: one batched run of a facecue model (design.md, "The model artefact").

A backend takes uint8 [N, S, S, 3] RGB face crops and returns float32 logits [N, C] per task. The
classifier thread only sees this protocol, so a TensorRT-engine backend can be added beside ONNX Runtime.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.config import ClassifierConfig, ConfigError
from runtime.metadata import ModelInfo


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


def open_backend(model_path: str | Path, config: ClassifierConfig) -> Backend:
    """The backend that `config.backend` names, with the model at `model_path` loaded."""
    if config.backend == "onnxruntime":
        from runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_path, config)
    if config.backend == "tensorrt":
        from runtime.backends.tensorrt import TensorRTBackend  # imports tensorrt and cuda-python when opened

        return TensorRTBackend(model_path, config)
    raise ConfigError(f"classifier.backend: unknown backend {config.backend!r} (known: onnxruntime, tensorrt)")
