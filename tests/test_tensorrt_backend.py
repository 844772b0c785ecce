"""TensorRT engine path without a GPU: the sidecar schema, the version/GPU refusal, clear errors when TensorRT or
cuda-python is absent, and the Jetson profile. The engine itself runs in scripts/gpu_check.py on NVIDIA machines."""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from export.tensorrt_build import EngineBuildError, attach_timing_cache, check_network_input
from export.tensorrt_build import main as build_main
from runtime.backends import BackendError, open_backend
from runtime.backends.providers import profile_shapes
from runtime.backends.tensorrt import (EngineMismatchError, EngineTarget, check_target, cuda_check, import_cudart,
                                       import_tensorrt, read_engine_info, sidecar_document, sidecar_path, stream_handle)
from runtime.config import ClassifierConfig, load_config
from runtime.metadata import ModelMetadataError, build_document

REPO = Path(__file__).resolve().parent.parent
ORIN = EngineTarget("10.3.0.30", "Orin", (8, 7))
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def write_engine(tmp_path, target=ORIN, entry_override=None) -> Path:
    """An engine file (bytes never read without TensorRT) and its sidecar, as export.tensorrt_build writes them."""
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not a real plan")
    document = sidecar_document(build_document(["age", "gender", "emotion"], 336, "pe-core-l14-336", "dora", "fp16"),
                                target, {"min": [1, 336, 336, 3], "opt": [2, 336, 336, 3], "max": [8, 336, 336, 3]})
    if entry_override == "missing":
        del document["tensorrt"]
    elif entry_override is not None:
        document["tensorrt"] = entry_override
    sidecar_path(engine).write_text(json.dumps(document))
    return engine


def test_sidecar_round_trip(tmp_path):
    info, target = read_engine_info(write_engine(tmp_path))
    assert target == ORIN
    assert info.precision == "fp16" and info.input_size == 336 and info.task_names == ["age", "gender", "emotion"]
    assert info.document["tensorrt"]["profile"]["max"] == [8, 336, 336, 3]
    assert info.document["format_version"] == 1  # the facecue document is all there


@pytest.mark.parametrize("entry, message", [("missing", "no 'tensorrt' entry"), ({"version": "10.3"}, "malformed 'tensorrt'"),
                                            ({"version": "10.3", "gpu": "Orin", "compute_capability": "x"}, "malformed")])
def test_bad_sidecars_are_named(tmp_path, entry, message):
    engine = write_engine(tmp_path, entry_override=entry)
    with pytest.raises(ModelMetadataError, match=message):
        read_engine_info(engine)


def test_missing_sidecar_or_engine(tmp_path):
    engine = write_engine(tmp_path)
    sidecar_path(engine).unlink()
    with pytest.raises(ModelMetadataError, match="metadata file .* is missing"):
        read_engine_info(engine)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        read_engine_info(tmp_path / "nothing.engine")


@pytest.mark.parametrize("here, message", [
    (EngineTarget("10.3.0.30", "Orin", (8, 7)), None),
    (EngineTarget("10.7.0.23", "Orin", (8, 7)), "TensorRT 10.3.0.30, this machine has 10.7.0.23"),
    (EngineTarget("10.3.0.31", "Orin", (8, 7)), "this machine has 10.3.0.31"),  # build numbers matter too
    (EngineTarget("10.3.0.30", "NVIDIA H100 80GB HBM3", (9, 0)), "GPU 'Orin' .*8.7.*'NVIDIA H100 80GB HBM3' \\(9.0\\)"),
    (EngineTarget("10.3.0.30", "Orin", (8, 6)), "compute capability 8.7"),
])
def test_version_and_gpu_refusal(tmp_path, here, message):
    engine = write_engine(tmp_path)
    _, built = read_engine_info(engine)
    if message is None:
        check_target(built, here, engine)
        return
    with pytest.raises(EngineMismatchError, match=message) as error:
        check_target(built, here, engine)
    assert "rebuild it on this machine" in str(error.value)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here: the missing-package message cannot be shown")
def test_missing_tensorrt_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(BackendError, match="system-site-packages"):
        import_tensorrt()
    with pytest.raises(BackendError, match="TensorRT's Python bindings"):
        open_backend(write_engine(tmp_path), ClassifierConfig(backend="tensorrt"))
    assert build_main([str(tmp_path / "model.onnx"), "--out", str(tmp_path / "x.engine")]) == 2  # model missing
    assert "model file not found" in capsys.readouterr().err


def test_cuda_python_import_or_its_message():
    if importlib.util.find_spec("cuda") is None:
        with pytest.raises(BackendError, match=r"cuda-python>=12.6,<13"):
            import_cudart()
    else:
        assert hasattr(import_cudart(), "cudaMalloc")


@pytest.mark.skipif(not HAS_TENSORRT, reason="needs TensorRT 10 and an NVIDIA GPU (scripts/gpu_check.py runs the engine path)")
def test_engine_builds_and_runs(tiny_model, tmp_path):
    import numpy as np

    from export.fp16 import export_fp16
    from export.tensorrt_build import build_engine

    fp16, _ = export_fp16(tiny_model, tmp_path / "model.fp16.onnx", samples=4)
    engine = build_engine(fp16, tmp_path / "model.engine", max_batch=4)
    backend = open_backend(engine, ClassifierConfig(backend="tensorrt", max_batch=4))
    assert backend.run(np.zeros((3, 32, 32, 3), np.uint8))["emotion"].shape == (3, 7)
    backend.close()


def test_jetson_profile_loads():
    config = load_config(REPO / "configs" / "jetson-orin.yaml")
    assert config.classifier.backend == "tensorrt" and config.classifier.model.endswith(".engine")
    assert "nvarguscamerasrc" in config.source.uri and "appsink drop=true max-buffers=1" in config.source.uri
    assert config.overlay.show is False and config.classifier.cpu_fallback is False
    assert 1 <= config.classifier.opt_batch <= config.classifier.max_batch


# --- cuda-python and TensorRT conventions, without either installed ------------------------------------
# Small stand-ins that follow the documented return conventions (NVIDIA TensorRT Python API documentation); the real calls
# run in scripts/gpu_check.py on NVIDIA machines.


def real_cudart():
    try:
        return import_cudart()
    except BackendError:
        pytest.skip("cuda-python is not installed")


def test_cuda_errors_are_checked_before_the_values():
    """The real cuda-python on a machine without a driver: (cudaErrorInsufficientDriver, None), never a crash."""
    cudart = real_cudart()
    success = cudart.cudaError_t.cudaSuccess
    assert cuda_check(cudart, (success, 1234), "cudaMalloc") == 1234
    assert cuda_check(cudart, (success,), "cudaFree") is None
    result = cudart.cudaMalloc(1024)
    if result[0] == success:
        cuda_check(cudart, cudart.cudaFree(result[1]), "cudaFree")
        pytest.skip("a CUDA device is present: the no-driver path cannot be shown")
    with pytest.raises(BackendError, match=r"CUDA cudaMalloc failed: cudaError\w+ \(.+\)") as error:
        cuda_check(cudart, result, "cudaMalloc")
    if result[0] == cudart.cudaError_t.cudaErrorInsufficientDriver:
        assert "cuda-python>=12.6,<13" in str(error.value)


def test_stream_handle_is_the_raw_handle_not_the_wrapper_address():
    cudart = real_cudart()
    stream = cudart.cudaStream_t(init_value=0x7F00)  # cudaStreamCreate's type, made without a GPU
    assert stream.getPtr() != 0x7F00  # the wrapper's own storage: never hand it to TensorRT
    assert stream_handle(stream) == 0x7F00


@pytest.mark.parametrize("layout, expected", [(["cuda/bindings/runtime.py", "cuda/cudart.py"], "new"),
                                              (["cuda/cudart.py"], "old")])
def test_cudart_import_prefers_the_new_name(tmp_path, monkeypatch, layout, expected):
    for file in layout:  # cuda-python's two module layouts (>= 12.6.1: cuda.bindings.runtime; 12.2: cuda.cudart)
        path = tmp_path / file
        path.parent.mkdir(parents=True, exist_ok=True)
        for package in (path.parent, path.parent.parent):  # regular packages, so an installed cuda-python is shadowed
            if package != tmp_path:
                (package / "__init__.py").touch()
        path.write_text(f"LAYOUT = {'new' if 'bindings' in file else 'old'!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    installed = [m for m in sys.modules if m == "cuda" or m.startswith("cuda.")]
    for name in installed:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    try:
        assert import_cudart().LAYOUT == expected
    finally:
        for name in [m for m in sys.modules if (m == "cuda" or m.startswith("cuda.")) and m not in installed]:
            del sys.modules[name]  # the stand-ins must not outlive the test


class Config:
    """IBuilderConfig's timing-cache calls: create_timing_cache(bytes), set_timing_cache(cache, ignore_mismatch) -> bool."""

    def __init__(self, refuse: bytes):
        self.refuse, self.set = refuse, []

    def create_timing_cache(self, data: bytes):
        if data == b"garbage":
            raise RuntimeError("corrupt timing cache")
        return data

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False  # a cache from another GPU is never trusted
        self.set.append(cache)
        return cache != self.refuse


@pytest.mark.parametrize("saved, used", [(None, b""), (b"this gpu", b"this gpu"), (b"other gpu", b""), (b"garbage", b"")])
def test_timing_cache_reused_or_replaced(tmp_path, caplog, saved, used):
    path = tmp_path / "model.engine.timing"
    if saved is not None:
        path.write_bytes(saved)
    config = Config(refuse=b"other gpu")
    assert attach_timing_cache(config, path) == used and config.set[-1] == used
    assert ("starting an empty one" in caplog.text) == (saved not in (None, b"this gpu"))


def test_network_input_must_match_the_profile(tiny_model):
    from runtime.metadata import read_model_info

    shapes = profile_shapes(read_model_info(tiny_model), max_batch=8, opt_batch=2)

    def network(*inputs):
        tensors = [types.SimpleNamespace(name=name, shape=shape) for name, shape in inputs]
        return types.SimpleNamespace(num_inputs=len(tensors), get_input=tensors.__getitem__)

    check_network_input(network(("images", (-1, 32, 32, 3))), shapes, Path("m.onnx"))
    with pytest.raises(EngineBuildError, match=r"network inputs \['pixels'\]"):
        check_network_input(network(("pixels", (-1, 32, 32, 3))), shapes, Path("m.onnx"))
    with pytest.raises(EngineBuildError, match=r"shape \(-1, 3, 32, 32\)"):
        check_network_input(network(("images", (-1, 3, 32, 32))), shapes, Path("m.onnx"))
