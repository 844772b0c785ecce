"""ONNX Runtime backend: a session configured from the model's `facecue` metadata and the config.

Thread budget: intra-op threads from config (0 = every core this process may use: perception needs a
fraction of one core, and leaving it a whole core halved a 2-core CPU's classifier, BENCHMARKS.md
"First attributes in the live pipeline"), inter-op threads from config, sequential execution. Idle
intra-op threads sleep instead of spinning, so they do not take the core perception is running on. Providers and their options
come from config; a provider this onnxruntime build does not have is an error, not a silent fallback.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.backends import BackendError
from runtime.backends.checks import ORT_TYPES, check_graph
from runtime.backends.providers import TENSORRT, check_session_providers, providers_from_config
from runtime.config import ClassifierConfig
from runtime.metadata import ModelInfo, ModelMetadataError, info_from_metadata_map, read_model_info

log = logging.getLogger(__name__)


def default_intra_op_threads() -> int:
    """Every core this process may run on (its affinity mask: taskset, a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def session_options(config: ClassifierConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads or default_intra_op_threads()
    options.inter_op_num_threads = config.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; ORT's warnings are noise for users
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntimeBackend:
    def __init__(self, model_path: str | Path, config: ClassifierConfig):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        info = read_model_info(path) if TENSORRT in config.providers else None  # TensorRT profiles need the input size
        providers = providers_from_config(info, config)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=session_options(config), providers=providers)
        except BackendError:
            raise
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise BackendError(f"{path} is not a readable ONNX model ({error})") from None
        check_session_providers(self.session.get_providers(), config)
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.info: ModelInfo = info_from_metadata_map(metadata, str(path))
        self.path = path
        self.max_batch = config.max_batch
        self._run_options = ort.RunOptions()  # its `terminate` flag cancels a running inference
        self._check_signature()
        log.info(
            "model %s: %s/%s %s, input %d px, tasks %s, providers %s, %d intra-op threads",
            path.name, self.info.backbone, self.info.adapter, self.info.precision, self.info.input_size,
            self.info.task_names, self.session.get_providers(), session_options(config).intra_op_num_threads,
        )

    def _check_signature(self) -> None:
        """The graph against the metadata (runtime/backends/checks.py); a static batch axis caps the batch."""
        inputs = {i.name: i for i in self.session.get_inputs()}
        if self.info.input_name not in inputs:
            raise ModelMetadataError(
                f"{self.path}: metadata names input {self.info.input_name!r}, the graph has {list(inputs)}"
            )
        model_input = inputs[self.info.input_name]
        outputs = {o.name: list(o.shape) for o in self.session.get_outputs()}
        check_graph(self.path, self.info, model_input.name, list(model_input.shape),
                    ORT_TYPES.get(model_input.type, model_input.type), outputs)
        batch = model_input.shape[0]
        if isinstance(batch, int) and batch > 0:
            self.max_batch = min(self.max_batch, batch)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        size = self.info.input_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 [N, {size}, {size}, 3] crops, got {images.dtype} {images.shape}")
        names = self.info.task_names
        outputs = self.session.run(names, {self.info.input_name: np.ascontiguousarray(images)}, self._run_options)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(names, outputs)}

    def cancel(self) -> None:
        """Abort a running inference (from another thread) and refuse later ones: a large model takes
        seconds per batch on a CPU, and shutdown should not wait for it."""
        self._run_options.terminate = True

    def close(self) -> None:
        self.session = None
