"""OpenVINO backend: the same facecue ONNX files (FP32, FP16, INT8 QDQ), or an OpenVINO IR (.xml) from
`python -m calibration int8 --engine nncf`, compiled for an OpenVINO device (`pip install -e ".[openvino]"`).

- Precision (`classifier.precision`): OpenVINO's INFERENCE_PRECISION_HINT. `auto` is bf16 where the CPU
  plugin reports BF16 among its OPTIMIZATION_CAPABILITIES (AMX or AVX-512 BF16), else f32; f16 is
  accepted but not chosen by `auto` (on a CPU without AVX-512 FP16 it is emulated; not benchmarked). INT8 layers of a
  quantized model stay INT8 whatever the hint; it sets the precision of the float layers around them.
- Threads: `classifier.intra_op_threads` (the ONNX Runtime budget: 0 = every core) → INFERENCE_NUM_THREADS,
  one stream, latency hint: one request at a time, like the ONNX Runtime backend.
- Sharing the cores: the classifier's threads run beside capture and detection, so on the CPU its threads are
  not pinned to cores (ENABLE_CPU_PINNING NO) and TBB balances work between them (TBB_PARTITIONER AUTO, where
  this OpenVINO has it). Pinned threads with a static split wait for whichever thread the detector preempted:
  an L14 INT8 inference beside the detector took p50 836 / p95 968 ms pinned and static, 722 / 801 ms now
  (BENCHMARKS.md "Stop 20: sharing the cores"). `classifier.openvino_properties` sets any other property, or these back.
- Cache: compiled blobs under `classifier.openvino_cache_dir` (CACHE_DIR), keyed by the model file and the
  settings, so a second start skips compilation (BENCHMARKS.md has first and second start).
- The batch axis stays dynamic as exported (the CPU plugin runs any batch of one compiled model; no
  recompilation per batch size); a static batch axis caps `max_batch`.
- Metadata: the facecue document from the ONNX file's metadata (OpenVINO's ONNX reader also copies it into the
  model's rt_info `framework.facecue`, which an IR saved from such a model keeps); the graph signature is
  checked with runtime/backends/checks.py like the other backends.
- `cancel()`: InferRequest.cancel() aborts a running inference at shutdown; later runs are refused.
- Devices (`classifier.openvino_device`): CPU is tested here; GPU, NPU and AUTO are passed to OpenVINO as
  named and are UNTESTED (no such device on the machines this was written on).
Property names: OpenVINO's runtime documentation (docs.openvino.ai, "Model caching", "Precision control",
"CPU device").
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from runtime.backends import BackendError
from runtime.backends.checks import check_graph
from runtime.config import ClassifierConfig
from runtime.metadata import METADATA_KEY, ModelInfo, ModelMetadataError, parse_document, read_model_info

log = logging.getLogger(__name__)

IR_SUFFIX = ".xml"
HINTS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise BackendError("classifier.backend openvino: the openvino package is not installed "
                           "(pip install -e \".[openvino]\")") from None
    return openvino


def default_threads() -> int:
    from runtime.backends.onnxruntime import default_intra_op_threads  # one thread budget for both backends

    return default_intra_op_threads()


def resolve_precision(requested: str, capabilities: list[str], device: str) -> tuple[str | None, str]:
    """(hint to set or None for the device's own default, why). `auto` asks the device what it can do."""
    if requested != "auto":
        return HINTS[requested], "classifier.precision"
    if device != "CPU":
        return None, f"auto: {device}'s default"
    if "BF16" in capabilities:
        return "bf16", "auto: the CPU has AMX or AVX-512 BF16"
    return "f32", "auto: no BF16 on this CPU"


def read_ir_info(path: Path) -> ModelInfo:
    """The facecue document of an OpenVINO IR: `<rt_info><framework><facecue value=...>` in the .xml."""
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise BackendError(f"{path} is not a readable OpenVINO IR ({error})") from None
    node = root.find(f"rt_info/framework/{METADATA_KEY}")
    if node is None or node.get("value") is None:
        raise ModelMetadataError(f"{path} has no '{METADATA_KEY}' metadata: it is not a facecue model "
                                 "(make one with `python -m export`, see README)")
    return parse_document(node.get("value"), str(path))


def read_info(path: Path) -> ModelInfo:
    return read_ir_info(path) if path.suffix == IR_SUFFIX else read_model_info(path)


def cpu_sharing_properties(supported) -> dict[str, str]:
    """Unpinned threads and TBB's balancing partitioner (module docstring, "Sharing the cores")."""
    properties = {"ENABLE_CPU_PINNING": "NO"}
    if "TBB_PARTITIONER" in supported:  # not in every OpenVINO release the extra admits
        properties["TBB_PARTITIONER"] = "AUTO"
    return properties


def user_properties(core, device: str, supported, given: dict) -> dict[str, str]:
    """`classifier.openvino_properties` as OpenVINO strings (YAML's yes/no arrive as booleans), each checked
    against the device here, so that a wrong key or value is named rather than failing the compilation."""
    properties = {str(key): ("YES" if value else "NO") if isinstance(value, bool) else str(value)
                  for key, value in given.items()}
    if not properties:
        return {}
    settable = {name for name, mode in supported.items() if "W" in str(mode)}
    for key, value in properties.items():
        if key not in settable:
            raise BackendError(f"classifier.openvino_properties: {key} is not a property OpenVINO's {device} "
                               f"device lets you set (settable: {', '.join(sorted(settable))})")
        try:
            core.set_property(device, {key: value})
        except (RuntimeError, TypeError) as error:
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            raise BackendError(f"classifier.openvino_properties: {key}={value} is refused by OpenVINO's {device} "
                               f"device ({lines[-1].strip() if lines else type(error).__name__})") from None
    return properties


def _shape(partial_shape) -> list:
    return [d.get_length() if d.is_static else None for d in partial_shape]


class OpenVinoBackend:
    def __init__(self, model_path: str | Path, config: ClassifierConfig):
        path = Path(model_path)
        self.info: ModelInfo = read_info(path)  # a missing file or a non-facecue model is named before compiling
        ov = import_openvino()
        core = ov.Core()
        device = config.openvino_device
        if device != "AUTO" and device not in core.available_devices:
            raise BackendError(f"classifier.openvino_device: {device} not available to OpenVINO here "
                               f"(available: {core.available_devices})")
        capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")) if device == "CPU" else []
        hint, why = resolve_precision(config.precision, capabilities, device)
        threads = config.intra_op_threads or default_threads()
        supported = core.get_property(device, "SUPPORTED_PROPERTIES")
        properties = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
        if device == "CPU":
            properties["INFERENCE_NUM_THREADS"] = str(threads)
            properties.update(cpu_sharing_properties(supported))
        if hint is not None:
            properties["INFERENCE_PRECISION_HINT"] = hint
        properties.update(user_properties(core, device, supported, config.openvino_properties))
        self.cache_dir = Path(config.openvino_cache_dir).expanduser() if config.openvino_cache_dir else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            properties["CACHE_DIR"] = str(self.cache_dir)
        try:  # from the path, so that a cache hit skips reading and converting the model as well
            self.compiled = core.compile_model(str(path), device, properties)
        except RuntimeError as error:
            raise BackendError(f"{path} is not a readable ONNX model or OpenVINO IR, or does not compile on "
                               f"{device} ({str(error).strip().splitlines()[0]})") from None
        self.path, self.device = path, device
        self.precision = (self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() if device == "CPU"
                          else hint or "default")
        self.precision_reason = why
        if hint is not None and self.precision != hint:
            log.warning("classifier.precision %s: OpenVINO on this %s runs %s instead (its fallback)", hint, device,
                        self.precision)
            self.precision_reason += f"; {hint} not supported here"
        self.threads = threads if device == "CPU" else None
        self.max_batch = config.max_batch
        self._check_signature()
        self.request = self.compiled.create_infer_request()
        self._cancelled = False
        self.label = f"openvino {device} {self.precision}" + (f" (model {self.info.precision})"
                                                               if self.info.precision != "fp32" else "")
        log.info("model %s: %s/%s %s, input %d px, tasks %s, OpenVINO %s on %s, precision %s (%s), %s threads, cache %s",
                 path.name, self.info.backbone, self.info.adapter, self.info.precision, self.info.input_size,
                 self.info.task_names, ov.get_version(), device, self.precision, why, self.threads, self.cache_dir)

    def _check_signature(self) -> None:
        inputs = self.compiled.inputs
        if len(inputs) != 1:
            raise ModelMetadataError(f"{self.path}: {len(inputs)} graph inputs, a facecue model has one")
        model_input = inputs[0]
        outputs = {name: _shape(o.get_partial_shape()) for o in self.compiled.outputs for name in o.get_names()}
        shape = _shape(model_input.get_partial_shape())
        check_graph(self.path, self.info, model_input.get_any_name(), shape,
                    np.dtype(model_input.get_element_type().to_dtype()).name, outputs)
        if shape[0] is not None:
            self.max_batch = min(self.max_batch, shape[0])  # a static batch axis caps the batch

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        size = self.info.input_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 [N, {size}, {size}, 3] crops, got {images.dtype} {images.shape}")
        if self._cancelled:
            raise BackendError("the OpenVINO inference was cancelled (shutdown)")
        results = self.request.infer({0: np.ascontiguousarray(images)})
        by_name = {name: value for port, value in results.items() for name in port.get_names()}
        return {name: np.array(by_name[name], dtype=np.float32) for name in self.info.task_names}  # copies: the
        # request's output buffers are reused by the next inference

    def cancel(self) -> None:
        """Abort a running inference (from another thread) and refuse later ones."""
        self._cancelled = True
        self.request.cancel()

    def close(self) -> None:
        self.request = self.compiled = None

