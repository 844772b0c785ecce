"""FP16 ONNX: conversion of the real tiny exported model, parity with FP32 in ONNX Runtime, which ops stay FP32."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.fp16 import (Fp16ParityError, convert_to_fp16, export_fp16, fp32_op_types, keeps_fp32, main, node_scope,
                         random_images, run_onnx)
from runtime.metadata import ModelMetadataError, read_model_info


@pytest.fixture(scope="module")
def fp16_model(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    path, parity = export_fp16(tiny_model, out, samples=48)
    return path, parity


def test_fp16_model_keeps_the_contract_and_agrees_with_fp32(tiny_model, fp16_model):
    path, parity = fp16_model
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("images", "tensor(uint8)")]
    assert [(o.name, o.type) for o in session.get_outputs()] == [(t, "tensor(float)") for t in ("age", "gender", "emotion")]
    assert [p.task for p in parity] == ["age", "gender", "emotion"]
    for p in parity:
        assert p.relative_error <= 1e-2 and p.top1_agreement >= 0.99 and p.decisive > 0
        assert p.max_abs_error > 0  # really ran in reduced precision
    fp32, fp16 = read_model_info(tiny_model), read_model_info(path)
    assert fp16.precision == "fp16"
    assert {k: v for k, v in fp16.document.items() if k != "precision"} == \
           {k: v for k, v in fp32.document.items() if k != "precision"}  # nothing dropped


def test_fp32_islands_by_op_type_and_scope(fp16_model):
    model = onnx.load(str(fp16_model[0]))
    types = fp32_op_types(model)
    for op in ("LayerNormalization", "Softmax"):
        assert types[op] == {"fp32"}, op
    for op in ("Conv", "Gemm", "BatchNormalization"):
        assert types[op] == {"fp16"}, op
    assert "fp16" in types["MatMul"]
    weights = {t.name: t.data_type for t in model.graph.initializer}
    assert weights["backbone.blocks.0.attn.qkv.bias"] == TensorProto.FLOAT16
    block_matmul_weights = [n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights
                            and "blocks" in str(n.metadata_props)]
    assert block_matmul_weights and all(weights[w] == TensorProto.FLOAT16 for w in block_matmul_weights)
    assert weights["backbone.rope.pos_embed"] == TensorProto.FLOAT  # the RoPE table is not rounded
    elem = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    signs = [name for name in weights if name.endswith("_rot_sign")]  # export/rope_rotation.py's ±1 vectors
    assert signs and all(weights[name] == TensorProto.FLOAT for name in signs)
    rotation = [n for n in model.graph.node if n.op_type in ("Mul", "Add", "Gather") and len(node_scope(n)[1]) >= 2
                and node_scope(n)[1][-2].endswith("AttentionRope") and "scaled_dot_product" not in node_scope(n)[0][-1]]
    assert {n.op_type for n in rotation} == {"Mul", "Add", "Gather"}
    assert len(rotation) >= 4 and all(elem[i] == TensorProto.FLOAT for n in rotation for i in n.input if i in elem)
    pool = [n for n in model.graph.node if "attn_pool" in n.name or any(
        p.key == "pkg.torch.onnx.name_scopes" and "attn_pool" in p.value for p in n.metadata_props)]
    pool_weights = [weights[i] for n in pool for i in n.input if weights.get(i) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert pool_weights and set(pool_weights) == {TensorProto.FLOAT}


def test_decomposed_layer_norm_without_scopes_stays_fp32():
    """An exporter without node scopes: the op-type rule alone keeps LN's Pow/ReduceMean/Sqrt in FP32."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    w = numpy_helper.from_array(np.full((4, 4), 0.5, np.float32), "w")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Pow", ["h", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[1]), helper.make_node("Sqrt", ["ms"], ["rms"]),
             helper.make_node("Div", ["h", "rms"], ["y"])]
    graph = helper.make_graph(nodes, "ln", [x], [y], [w, two])
    model = convert_to_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    types = fp32_op_types(model)
    assert types["MatMul"] == {"fp16"} and types["Div"] == {"fp16"}
    assert types["Pow"] == types["ReduceMean"] == types["Sqrt"] == {"fp32"}
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert not keeps_fp32(nodes[0]) and keeps_fp32(nodes[1])


def test_parity_failure_writes_nothing(tiny_model, tmp_path):
    out = tmp_path / "strict.fp16.onnx"
    with pytest.raises(Fp16ParityError, match="not written"):
        export_fp16(tiny_model, out, tolerance=1e-9, samples=8)
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_model_that_is_already_fp16(fp16_model, tmp_path):
    with pytest.raises(ModelMetadataError, match="precision is 'fp16'"):
        export_fp16(fp16_model[0], tmp_path / "again.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_model_and_json(tiny_model, tmp_path, capsys):
    out, report = tmp_path / "cli.fp16.onnx", tmp_path / "parity.json"
    assert main([str(tiny_model), "--out", str(out), "--samples", "8", "--json", str(report)]) == 0
    assert "emotion" in capsys.readouterr().out
    assert [row["task"] for row in json.loads(report.read_text())] == ["age", "gender", "emotion"]
    images = random_images(4, 32, seed=3)
    assert run_onnx(out, images)["age"].shape == (4, 9)
    assert main([str(tmp_path / "missing.onnx")]) == 2
