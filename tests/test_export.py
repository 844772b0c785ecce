"""Export parity: ONNX Runtime vs the independent Meta-named reference + PEFT merge_and_unload."""
from __future__ import annotations

from conftest import require_export_extra

require_export_extra()  # before the imports below, which need it

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import TINY_BACKBONE
from pe_reference import tiny_config, write_thesis_files
from skimage import data

from runtime.crop import crop_face
from runtime.metadata import THESIS_LABELS, read_model_info

TOLERANCE = 1e-3  # relative error, as export.verify


def run_onnx(path, images: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": images})))


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / max(1.0, np.abs(ref).max()))


def face_crops(size: int) -> np.ndarray:
    """Real faces: the astronaut photo's face, and a frame of a bundled clip, cut with the runtime's crop."""
    astronaut = crop_face(data.astronaut(), (160.0, 40.0, 280.0, 190.0), size)
    coffee = crop_face(data.coffee(), (100.0, 0.0, 500.0, 400.0), size)
    return np.stack([astronaut, coffee, np.ascontiguousarray(astronaut[:, ::-1])])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from export.build import build_model, model_document
    from export.onnx_export import export_onnx

    directory = tmp_path_factory.mktemp("export")
    weights, adapters, reference = write_thesis_files(directory, tiny_config(TINY_BACKBONE), seed=3)
    model = build_model(TINY_BACKBONE, weights=weights, adapters=adapters)
    path = export_onnx(model, directory / "model.onnx", model_document(model, weights=weights, adapters=adapters))
    return path, reference, weights, adapters


def test_onnx_matches_thesis_pipeline_on_random_and_face_images(exported):
    path, reference, _, _ = exported
    size = tiny_config(TINY_BACKBONE)["image_size"]
    rng = np.random.default_rng(0)
    images = np.concatenate([rng.integers(0, 256, (5, size, size, 3), dtype=np.uint8), face_crops(size)])
    got = run_onnx(path, images)
    want = {k: v.numpy() for k, v in reference(torch.from_numpy(images)).items()}
    assert list(got) == ["age", "gender", "emotion"]
    for task in want:
        assert got[task].shape == want[task].shape
        assert relative_error(got[task], want[task]) <= TOLERANCE, task
        # the adapters and heads matter: without them the output would be far off
        assert np.abs(want[task]).max() > 1e-2


def test_batch_axis_is_dynamic(exported):
    path, reference, _, _ = exported
    size = tiny_config(TINY_BACKBONE)["image_size"]
    one = np.random.default_rng(1).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    many = np.repeat(one, 7, axis=0)
    assert np.allclose(run_onnx(path, many)["age"], run_onnx(path, one)["age"], atol=1e-5)


def test_graph_follows_the_contract(exported):
    path = exported[0]
    proto = onnx.load(str(path))
    ops = [node.op_type for node in proto.graph.node]
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert ops.count("LayerNormalization") == 2 * 2 + 3  # 2 per block + pre, post and pool norms, none decomposed
    assert not {"ReduceMean", "Pow", "Sqrt"} & set(ops)
    assert not any("lora" in init.name.lower() for init in proto.graph.initializer)
    (images,) = proto.graph.input
    assert images.name == "images"
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = images.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    for output in proto.graph.output:
        assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_metadata_document(exported):
    from export.build import sha256

    path, _, weights, adapters = exported
    info = read_model_info(path)
    document = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["facecue"])
    assert info.task_names == ["age", "gender", "emotion"]
    assert [list(t.labels) for t in info.tasks] == [THESIS_LABELS[t] for t in info.task_names]
    assert info.input_size == 32 and info.backbone == "pe-core-test-tiny" and info.adapter == "dora"
    assert info.precision == "fp32" and not info.random_weights
    assert document["input"] == {"name": "images", "size": 32, "layout": "NHWC", "dtype": "uint8", "color": "RGB"}
    assert document["crop"] == {"rule": "square", "margin": 0.0}
    assert document["source"]["weights_sha256"] == sha256(weights)
    assert document["source"]["adapters_sha256"]["custom_layers.pt"] == sha256(adapters / "custom_layers.pt")
    assert document["source"]["adapters_sha256"]["adapter_model.safetensors"] == \
        sha256(adapters / "adapter_model.safetensors")


def test_shared_fixture_gives_a_task_subset(tiny_model_factory):
    path = tiny_model_factory(("Gender",))
    assert read_model_info(path).task_names == ["gender"]
    outputs = run_onnx(path, np.zeros((2, 32, 32, 3), np.uint8))
    assert list(outputs) == ["gender"] and outputs["gender"].shape == (2, 2)
