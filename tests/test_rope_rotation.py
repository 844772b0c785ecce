"""export/rope_rotation.py: the RoPE rotation rewritten as Gather × sign gives the same outputs, bit for bit."""
from __future__ import annotations

from conftest import require_export_extra

require_export_extra()  # before the imports below, which need it

from collections import Counter

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import torch
from conftest import TINY_BACKBONE
from pe_reference import tiny_config, write_thesis_files

from export.build import build_model
from export.rope_rotation import rewrite_rope_rotation


def exported_ir(module: torch.nn.Module, example: torch.Tensor) -> ir.Model:
    with torch.no_grad():
        return torch.onnx.export(module.eval(), (example,), dynamo=True, opset_version=18, verbose=False).model


def run(model: ir.Model, path, inputs: np.ndarray) -> list[np.ndarray]:
    ir.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})


def ops(model: ir.Model) -> Counter:
    return Counter(node.op_type for node in model.graph)


def test_rewritten_model_gives_identical_outputs(tmp_path):
    weights, adapters, _ = write_thesis_files(tmp_path, tiny_config(TINY_BACKBONE), seed=3)  # thesis layout
    model = build_model(TINY_BACKBONE, weights=weights, adapters=adapters)
    size = model.config.image_size
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)  # the exported batch
    original = exported_ir(model, example)
    want = run(original, tmp_path / "original.onnx", images)
    before = ops(original)

    rewritten = exported_ir(model, example)
    assert rewrite_rope_rotation(rewritten) == 2 * model.config.depth  # query and key of every block
    after = ops(rewritten)
    got = run(rewritten, tmp_path / "rewritten.onnx", images)

    assert all(np.array_equal(g, w) for g, w in zip(got, want))  # not close: equal
    assert after["Gather"] - before["Gather"] == 2 * model.config.depth
    assert before["Neg"] - after["Neg"] == 2 * model.config.depth  # the slice-and-stack is gone
    assert before["Concat"] - after["Concat"] == 2 * model.config.depth
    assert not [name for name, value in rewritten.graph.initializers.items() if not list(value.uses())]


class SwapPairs(torch.nn.Module):
    """(x0, x1) → (x1, x0) without the negation: a near miss of rot(x) that must be left alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape) * 2.0


def test_a_different_function_is_not_rewritten(tmp_path):
    model = exported_ir(SwapPairs(), torch.randn(2, 3, 8))
    before = ops(model)
    assert rewrite_rope_rotation(model) == 0
    assert ops(model) == before
