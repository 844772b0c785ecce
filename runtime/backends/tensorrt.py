"""Native TensorRT engine backend (TensorRT 10.x): cuda-python device buffers, one CUDA stream, no torch.

An engine runs only with the TensorRT version and the GPU it was built for, so `<engine>.json` (the
facecue document plus a `tensorrt` entry, written by export/tensorrt_build.py) records both, and the
backend refuses a mismatch with a message that says how to rebuild. One `execute_async_v3` per batch.
API pitfalls handled here: cuda-python calls return an error tuple whose first element must be checked before
the others; the stream handle is `int(stream)` (not `getPtr()`); `cuda.bindings.runtime` replaced `cuda.cudart`.
NOT YET RUN ON NVIDIA HARDWARE: written against the documented API; scripts/gpu_check.py exercises it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.backends import BackendError
from runtime.backends.checks import check_graph
from runtime.config import ClassifierConfig
from runtime.metadata import ModelInfo, ModelMetadataError, read_model_info

log = logging.getLogger(__name__)

SIDECAR_KEY = "tensorrt"
REBUILD_HINT = "rebuild it on this machine: python -m export.tensorrt_build MODEL.fp16.onnx --out ENGINE"


class EngineMismatchError(BackendError):
    """The engine was built with another TensorRT version or for another GPU."""


@dataclass(frozen=True)
class EngineTarget:
    """What a serialized engine is bound to."""

    tensorrt_version: str  # full string, e.g. "10.3.0.30"
    gpu_name: str  # e.g. "Orin"
    compute_capability: tuple[int, int]  # e.g. (8, 7)


# --- the sidecar (no TensorRT needed) --------------------------------------------------------------


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def sidecar_document(document: dict, target: EngineTarget, profile: dict[str, list[int]]) -> dict:
    """The model's facecue document plus the `tensorrt` entry; nothing of the document is dropped."""
    entry = {"version": target.tensorrt_version, "gpu": target.gpu_name,
             "compute_capability": list(target.compute_capability), "profile": profile}
    return {**document, SIDECAR_KEY: entry}


def read_engine_info(engine_path: str | Path) -> tuple[ModelInfo, EngineTarget]:
    """The model info and build target from `<engine>.json`; malformed entries are named."""
    info = read_model_info(engine_path)  # checks the engine and its sidecar exist, parses the document
    entry = info.document.get(SIDECAR_KEY)
    where = sidecar_path(engine_path)
    if not isinstance(entry, dict):
        raise ModelMetadataError(f"{where}: no '{SIDECAR_KEY}' entry (TensorRT version and GPU); {REBUILD_HINT}")
    try:
        major, minor = (int(v) for v in entry["compute_capability"])
        target = EngineTarget(str(entry["version"]), str(entry["gpu"]), (major, minor))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelMetadataError(f"{where}: malformed '{SIDECAR_KEY}' entry {entry!r} ({error})") from None
    return info, target


def check_target(built: EngineTarget, here: EngineTarget, engine_path: str | Path) -> None:
    """Refuse an engine from another TensorRT version (all four version parts) or another GPU."""
    problems = []
    if built.tensorrt_version != here.tensorrt_version:
        problems.append(f"TensorRT {built.tensorrt_version}, this machine has {here.tensorrt_version}")
    if built.gpu_name != here.gpu_name or built.compute_capability != here.compute_capability:
        problems.append(f"GPU {built.gpu_name!r} (compute capability {'.'.join(map(str, built.compute_capability))}), "
                        f"this machine has {here.gpu_name!r} ({'.'.join(map(str, here.compute_capability))})")
    if problems:
        raise EngineMismatchError(f"{engine_path} was built for {'; '.join(problems)}: {REBUILD_HINT}")


# --- TensorRT and CUDA, imported lazily ------------------------------------------------------------


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError(
            "TensorRT's Python bindings are not importable. Jetson: JetPack 6.1/6.2 ships them (python3-libnvinfer); "
            "make the venv with --system-site-packages. Desktop: pip install 'tensorrt>=10,<12'."
        ) from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise BackendError(f"TensorRT {trt.__version__} is too old: strongly typed engines need TensorRT 10 "
                           "(JetPack 6.1/6.2, L4T >= 36.4)")
    return trt


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6.1
    except ImportError:
        try:
            from cuda import cudart  # cuda-python 12.2-12.6.0
        except ImportError:
            raise BackendError("cuda-python is not installed: pip install 'cuda-python>=12.6,<13' "
                               "(or pip install -e '.[tensorrt]'); 13.x needs a CUDA 13 driver") from None
    return cudart


def cuda_check(cudart, result, what: str):
    """cuda-python returns (error, *values); the values are undefined on error, so check first."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"CUDA {what} failed: {cuda_error_text(cudart, error)}")
    return values[0] if len(values) == 1 else (values or None)


def cuda_error_text(cudart, error) -> str:
    name = getattr(error, "name", str(error))
    status, text = cudart.cudaGetErrorString(error)
    if status == cudart.cudaError_t.cudaSuccess:
        name += f" ({text.decode(errors='replace') if isinstance(text, bytes) else text})"
    if "InsufficientDriver" in name:  # cuda-python 13 on a CUDA 12 driver (JetPack 6), or no NVIDIA driver at all
        name += "; is there an NVIDIA GPU and driver? JetPack 6 (CUDA 12.6) needs pip install 'cuda-python>=12.6,<13'"
    return name


def stream_handle(stream) -> int:
    """The raw cudaStream_t for TensorRT (never `stream.getPtr()`, the wrapper's own address)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle  # cuda-bindings >= 12.9.1
    except ImportError:
        return int(stream)
    return int(get_cuda_native_handle(stream))


def current_target(trt, cudart) -> EngineTarget:
    device = cuda_check(cudart, cudart.cudaGetDevice(), "cudaGetDevice")
    props = cuda_check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return EngineTarget(trt.__version__, name, (int(props.major), int(props.minor)))


# --- the backend -----------------------------------------------------------------------------------


class TensorRTBackend:
    def __init__(self, engine_path: str | Path, config: ClassifierConfig):
        path = Path(engine_path)
        self.info, built = read_engine_info(path)
        self._trt, self._cudart = import_tensorrt(), import_cudart()
        check_target(built, current_target(self._trt, self._cudart), path)
        self.path = path
        self._buffers: list[int] = []
        self._stream = None
        self._load(path)
        try:
            self._allocate(config.max_batch)
        except BaseException:
            self.close()  # free what was allocated before the failure
            raise
        log.info("engine %s: %s %s, TensorRT %s, batch <= %d, tasks %s", path.name, self.info.backbone,
                 self.info.precision, built.tensorrt_version, self.max_batch, self.info.task_names)

    def _load(self, path: Path) -> None:
        trt = self._trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{path}: TensorRT could not deserialize the engine (see its log above); {REBUILD_HINT}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [self.info.input_name]:
            raise ModelMetadataError(f"{path}: engine inputs {inputs}, the metadata says [{self.info.input_name!r}]")
        if trt.nptype(self.engine.get_tensor_dtype(self.info.input_name)) != np.uint8:
            raise ModelMetadataError(f"{path}: input {self.info.input_name!r} is not uint8")
        self._output_names = [n for n in names if n not in inputs]
        missing = [t for t in self.info.task_names if t not in self._output_names]
        if missing:
            raise ModelMetadataError(f"{path}: metadata lists tasks {missing} that are not engine outputs {names}")
        shape = lambda name: [int(d) if int(d) >= 0 else None for d in self.engine.get_tensor_shape(name)]  # noqa: E731
        check_graph(path, self.info, self.info.input_name, shape(self.info.input_name),
                    np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.info.input_name))).name,
                    {name: shape(name) for name in self._output_names})

    def _allocate(self, max_batch: int) -> None:
        """Device buffers for the largest batch of every I/O tensor (an engine output that is not a task too:
        TensorRT needs an address for each); one stream for copies and execution."""
        cudart, engine = self._cudart, self.engine
        profile_max = engine.get_tensor_profile_shape(self.info.input_name, 0)[2][0]
        self.max_batch = min(max_batch, int(profile_max))
        self._stream = cuda_check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        size = self.info.input_size
        self._addresses = {self.info.input_name: self._malloc(self.max_batch * size * size * 3)}
        self._output_dtypes: dict[str, np.dtype] = {}
        for name in self._output_names:
            dtype = np.dtype(self._trt.nptype(engine.get_tensor_dtype(name)))
            per_item = tuple(int(d) for d in engine.get_tensor_shape(name))[1:]
            if any(d < 0 for d in per_item):
                raise ModelMetadataError(f"{self.path}: output {name!r} has shape {per_item} after the batch; "
                                         "only the batch axis may be dynamic")
            self._addresses[name] = self._malloc(self.max_batch * int(np.prod(per_item)) * dtype.itemsize)
            self._output_dtypes[name] = dtype

    @property
    def stream(self):
        """The CUDA stream every copy and execution runs on (scripts/gpu_check.py times it with CUDA events)."""
        return self._stream

    def _malloc(self, nbytes: int) -> int:
        pointer = cuda_check(self._cudart, self._cudart.cudaMalloc(nbytes), "cudaMalloc")
        self._buffers.append(int(pointer))
        return int(pointer)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """One batched execution: copy in, execute, copy the task outputs back, all on the one stream."""
        size, cudart = self.info.input_size, self._cudart
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 [N, {size}, {size}, 3] crops, got {images.dtype} {images.shape}")
        if not 1 <= len(images) <= self.max_batch:
            raise ValueError(f"batch of {len(images)} outside the engine's profile 1..{self.max_batch}")
        images = np.ascontiguousarray(images)
        stream, kind = self._stream, cudart.cudaMemcpyKind
        if self.context.set_input_shape(self.info.input_name, images.shape) is False:
            raise BackendError(f"{self.path}: TensorRT refused input shape {images.shape}")
        for name, pointer in self._addresses.items():
            self.context.set_tensor_address(name, pointer)
        cuda_check(cudart, cudart.cudaMemcpyAsync(self._addresses[self.info.input_name], images.ctypes.data,
                                                  images.nbytes, kind.cudaMemcpyHostToDevice, stream), "copy to GPU")
        if not self.context.execute_async_v3(stream_handle(stream)):
            raise BackendError(f"{self.path}: TensorRT execution failed (see its log above)")
        results = {}
        for name in self.info.task_names:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))  # resolved for this batch
            host = np.empty(shape, self._output_dtypes[name])
            cuda_check(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self._addresses[name], host.nbytes,
                                                      kind.cudaMemcpyDeviceToHost, stream), "copy from GPU")
            results[name] = host
        cuda_check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return {name: value.astype(np.float32, copy=False) for name, value in results.items()}

    def close(self) -> None:
        for pointer in self._buffers:
            self._cudart.cudaFree(pointer)
        self._buffers = []
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self.context = self.engine = None
