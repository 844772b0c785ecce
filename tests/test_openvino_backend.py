"""The OpenVINO backend on the tiny exported model against ONNX Runtime, `classifier.backend: auto`, and bad values.

Real OpenVINO and ONNX Runtime sessions on the same file; real face crops (tests/helpers_faces) and random images.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers_faces import face_patches
from runtime.backends import BackendError, describe, inference_precision, open_backend
from runtime.backends.auto import choose_backend
from runtime.classifier import Classifier, CropRequest
from runtime.config import ClassifierConfig
from runtime.metadata import ModelMetadataError

pytest.importorskip("openvino")
REPO = Path(__file__).resolve().parents[1]
CLIP = "samples/face-demographics-walking-and-pause.mp4"
# Largest |OpenVINO − ONNX Runtime FP32| relative to the logits' scale (÷ max(1, max |ref|)), per precision.
TOLERANCE = {"f32": 1e-4, "bf16": 5e-2, "f16": 1e-2}


def images(size: int = 32) -> np.ndarray:
    """Real faces (three people, flipped, three brightness levels) and random images."""
    faces = [face for face in face_patches(size) for face in (face, face[:, ::-1])]
    faces = [np.clip(face * gain, 0, 255).astype(np.uint8) for face in faces for gain in (0.8, 1.0, 1.2)]
    noise = np.random.default_rng(0).integers(0, 256, (6, size, size, 3), dtype=np.uint8)
    return np.concatenate([np.stack(faces), noise])


def config(tmp_path: Path, **changes) -> ClassifierConfig:
    return ClassifierConfig(**{"intra_op_threads": 1, "openvino_cache_dir": str(tmp_path / "ov-cache")} | changes)


@pytest.fixture(scope="module")
def reference(tiny_model):
    backend = open_backend(tiny_model, ClassifierConfig(backend="onnxruntime", intra_op_threads=1))
    return backend.run(images())


@pytest.mark.parametrize("precision", ["f32", "bf16", "f16"])
def test_openvino_matches_onnxruntime_within_the_precision_tolerance(tiny_model, reference, tmp_path, precision):
    backend = open_backend(tiny_model, config(tmp_path, backend="openvino", precision=precision))
    # a CPU without AVX-512 FP16 / AMX-FP16 runs an f16 request in its own fallback (bf16 or f32), and says so
    assert backend.precision == precision or precision == "f16"
    precision = backend.precision
    assert inference_precision(backend) == precision and describe(backend) == f"openvino CPU {precision} (classifier.backend)"
    got = {}
    for start in (0, 8, 16):  # batches of 8 and of 4: one compiled model, dynamic batch axis
        for task, values in backend.run(images()[start:start + 8]).items():
            got.setdefault(task, []).append(values)
    for task, want in reference.items():
        values = np.concatenate(got[task])
        assert values.shape == want.shape and values.dtype == np.float32
        error = np.abs(values - want).max() / max(1.0, np.abs(want).max())
        assert error <= TOLERANCE[precision], (task, precision, error)
        if precision == "f32":
            assert (values.argmax(1) == want.argmax(1)).all()
    with pytest.raises(ValueError, match=r"expected uint8 \[N, 32, 32, 3\] crops"):
        backend.run(np.zeros((1, 16, 16, 3), np.uint8))


def test_auto_precision_follows_the_cpu(tiny_model, tmp_path):
    import openvino

    backend = open_backend(tiny_model, config(tmp_path, backend="openvino"))
    has_bf16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert backend.precision == ("bf16" if has_bf16 else "f32")
    assert backend.precision_reason.startswith("auto: ")


def test_int8_qdq_model_runs_on_openvino_like_on_onnxruntime(tiny_model, tmp_path):
    """The project's own QDQ calibration output (python -m calibration int8) on both engines."""
    from calibration.__main__ import main

    chips = tmp_path / "chips"
    chips.mkdir()
    import cv2

    for index, chip in enumerate(images(64)[:18]):
        cv2.imwrite(str(chips / f"{index}.png"), chip[..., ::-1])
    settings = tmp_path / "calibration.yaml"
    settings.write_text("int8:\n  calibration_crops: 12\n  held_out_crops: 6\n  min_calibration_crops: 4\n"
                        "  min_held_out_crops: 2\n  speed_batches: [1]\n  speed_repeats: 1\n")
    int8 = tmp_path / "tiny.int8.onnx"
    assert main(["--config", str(settings), "int8", "--model", str(tiny_model), "--crops", str(chips),
                 "--out", str(int8)]) == 0
    want = open_backend(int8, ClassifierConfig(backend="onnxruntime", intra_op_threads=1)).run(images())
    backend = open_backend(int8, config(tmp_path, backend="openvino", precision="f32"))
    assert "int8-qdq" in describe(backend)
    for task, values in backend.run(images()).items():
        # both run INT8 MatMuls, with their own rounding of the requantized activations
        assert np.abs(values - want[task]).max() / max(1.0, np.abs(want[task]).max()) < 0.1, task


def test_compiled_model_cache_is_filled_on_first_open_and_used_after(tiny_model, tmp_path):
    cache = tmp_path / "ov-cache"
    first = open_backend(tiny_model, config(tmp_path, backend="openvino", precision="f32"))
    blobs = sorted(cache.iterdir())
    assert blobs and any(p.suffix == ".blob" for p in blobs)
    second = open_backend(tiny_model, config(tmp_path, backend="openvino", precision="f32"))
    assert sorted(cache.iterdir()) == blobs  # the same settings hit the same blob
    np.testing.assert_array_equal(first.run(images())["age"], second.run(images())["age"])
    # OpenVINO caches the model before its precision passes: a bf16 open from the same blob is still bf16
    cached = open_backend(tiny_model, config(tmp_path, backend="openvino", precision="bf16")).run(images())["age"]
    fresh = open_backend(tiny_model, config(tmp_path, backend="openvino", precision="bf16", openvino_cache_dir=""))
    np.testing.assert_array_equal(cached, fresh.run(images())["age"])
    assert not np.array_equal(cached, first.run(images())["age"])


def test_cpu_threads_are_unpinned_by_default_and_properties_from_config_win(tiny_model, tmp_path):
    default = open_backend(tiny_model, config(tmp_path, backend="openvino", precision="f32"))
    assert default.compiled.get_property("ENABLE_CPU_PINNING") is False  # the classifier shares the cores
    if "TBB_PARTITIONER" in default.compiled.get_property("SUPPORTED_PROPERTIES"):
        assert str(default.compiled.get_property("TBB_PARTITIONER")).endswith("AUTO")
    # YAML's `yes` arrives as a boolean; a string value passes as written
    given = config(tmp_path, backend="openvino", precision="f32",
                   openvino_properties={"ENABLE_CPU_PINNING": True, "INFERENCE_NUM_THREADS": 1})
    pinned = open_backend(tiny_model, given)
    assert pinned.compiled.get_property("ENABLE_CPU_PINNING") is True
    np.testing.assert_array_equal(pinned.run(images())["age"], default.run(images())["age"])


@pytest.mark.parametrize("properties, message", [
    ({"NO_SUCH_PROPERTY": 1}, "classifier.openvino_properties: NO_SUCH_PROPERTY is not a property OpenVINO's CPU "
                              "device lets you set (settable: "),
    ({"OPTIMIZATION_CAPABILITIES": "INT8"}, "OPTIMIZATION_CAPABILITIES is not a property"),  # read-only
    ({"INFERENCE_NUM_THREADS": "many"}, "classifier.openvino_properties: INFERENCE_NUM_THREADS=many is refused by "
                                        "OpenVINO's CPU device ("),
])
def test_a_bad_openvino_property_is_named(tiny_model, tmp_path, properties, message):
    with pytest.raises(BackendError) as raised:
        open_backend(tiny_model, config(tmp_path, backend="openvino", openvino_properties=properties))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_cancel_refuses_later_runs_and_stop_is_not_an_error(tiny_model, tmp_path):
    backend = open_backend(tiny_model, config(tmp_path, backend="openvino"))
    classifier = Classifier(backend, max_batch=2, batch_wait=0.0, queue_size=2)
    classifier.start()
    classifier.submit(CropRequest(1, images()[0], 1.0, 0.0))
    classifier.stop()
    assert classifier.error is None
    with pytest.raises(BackendError, match="cancelled"):
        backend.run(images()[:1])


def test_a_graph_that_does_not_fit_its_metadata_is_refused(tiny_model, tmp_path):
    """The tiny model's facecue document on a float-input graph: the shared signature check names it."""
    document = {p.key: p.value for p in onnx.load(str(tiny_model)).metadata_props}["facecue"]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["images"], ["age"])], "wrong",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 32, 32, 3])],
        [onnx.helper.make_tensor_value_info("age", onnx.TensorProto.FLOAT, ["N", 32, 32, 3])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.metadata_props.add(key="facecue", value=document)
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    with pytest.raises(ModelMetadataError, match="input 'images' is float32 in the graph, the metadata says uint8"):
        open_backend(tmp_path / "wrong.onnx", config(tmp_path, backend="openvino"))
    with pytest.raises(FileNotFoundError, match="model file not found"):
        open_backend(tmp_path / "missing.onnx", config(tmp_path, backend="openvino"))


# --- auto ------------------------------------------------------------------------------------------


def test_auto_picks_openvino_on_this_x86_cpu_and_says_why(tiny_model, tmp_path):
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("OpenVINO is chosen on x86 CPUs only")
    choice = choose_backend(tiny_model, ClassifierConfig())
    assert (choice.backend, choice.reason) == ("openvino", f"OpenVINO installed on an {platform.machine().lower()} CPU")
    backend = open_backend(tiny_model, config(tmp_path))  # backend: auto is the default
    assert describe(backend).startswith("openvino CPU ") and "(auto: OpenVINO installed" in describe(backend)


def test_auto_rules_without_opening_anything(tmp_path):
    default = ClassifierConfig()
    engine = choose_backend(tmp_path / "model.engine", default)  # the file need not exist: nothing is opened
    assert (engine.backend, engine.reason) == ("tensorrt", ".engine is a TensorRT engine file")
    cpu = ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    on_gpu = choose_backend("m.onnx", default, available=gpu, gpu=True)
    assert on_gpu.backend == "onnxruntime" and on_gpu.config.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    asked = ClassifierConfig(providers=["TensorrtExecutionProvider", "CPUExecutionProvider"])
    assert choose_backend("m.onnx", asked, available=gpu, gpu=False).config.providers == asked.providers
    assert choose_backend("m.onnx", default, available=gpu, gpu=False, openvino=True, machine="x86_64").backend == "openvino"
    assert choose_backend("m.onnx", default, available=cpu, openvino=True, machine="aarch64").reason == \
        "CPU (not an x86 CPU (aarch64))"
    assert choose_backend("m.onnx", asked, available=cpu, openvino=True, machine="x86_64").backend == "onnxruntime"
    assert choose_backend("m.xml", default).backend == "openvino"


def test_auto_without_openvino_runs_onnxruntime(tiny_model):
    """A subprocess where `import openvino` fails (a sys.modules block), with the real onnxruntime."""
    script = ("import sys; sys.modules['openvino'] = None\n"
              "from runtime.backends import open_backend, describe\n"
              "from runtime.config import ClassifierConfig\n"
              f"backend = open_backend({str(tiny_model)!r}, ClassifierConfig(intra_op_threads=1))\n"
              "print(describe(backend))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "onnxruntime CPUExecutionProvider (auto: CPU (OpenVINO not installed))"


def test_backend_and_precision_reach_the_statistics_and_the_jsonl_run_line(tiny_model, tmp_path, capsys):
    import run_camera

    jsonl = tmp_path / "run.jsonl"
    status = run_camera.main(["--source", CLIP, "--model", str(tiny_model), "--mode", "fast", "--headless",
                              "--jsonl", str(jsonl), "--set", "classifier.intra_op_threads=1",
                              "--set", "classifier.precision=bf16",
                              "--set", f"classifier.openvino_cache_dir={tmp_path / 'cache'}"])
    assert status == 0
    run = json.loads(jsonl.read_text().splitlines()[0])
    assert run["type"] == "run" and run["inference_precision"] == "bf16"
    assert run["backend"].startswith("openvino CPU bf16 (auto: ")
    stats = json.loads(jsonl.read_text().splitlines()[-1])
    assert stats["backend"] == run["backend"] and stats["inference_precision"] == "bf16"
    assert "backend: openvino CPU bf16 (auto: " in capsys.readouterr().out


@pytest.mark.parametrize("key, value, message", [
    ("classifier.precision", "f64", "classifier.precision must be one of auto, f32, bf16, f16"),
    ("classifier.openvino_device", "TPU", "classifier.openvino_device must be one of CPU, GPU, NPU, AUTO"),
    ("classifier.backend", "ov", "classifier.backend must be one of auto, onnxruntime, openvino, tensorrt"),
    ("classifier.openvino_properties.TBB_PARTITIONER", "sometimes",
     "classifier.openvino_properties: TBB_PARTITIONER=sometimes is refused by OpenVINO's CPU device"),
])
def test_bad_backend_values_exit_2_naming_the_key(tiny_model, capsys, key, value, message):
    import run_camera

    assert run_camera.main(["--source", CLIP, "--model", str(tiny_model), "--headless", "--set", f"{key}={value}"]) == 2
    assert message in capsys.readouterr().err
