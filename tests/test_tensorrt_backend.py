"""TensorRT engine path without a GPU: the sidecar schema, the version/GPU refusal, clear errors when TensorRT or
cuda-python is absent, and the Jetson profile. The engine itself runs in scripts/gpu_check.py on NVIDIA machines."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from export.tensorrt_build import main as build_main
from runtime.backends import BackendError, open_backend
from runtime.backends.tensorrt import (EngineMismatchError, EngineTarget, check_target, import_cudart, import_tensorrt,
                                       read_engine_info, sidecar_document, sidecar_path)
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
