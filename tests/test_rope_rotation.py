"""export/rope_rotation.py: the RoPE rotation rewritten as Gather × sign gives the same outputs, bit for bit."""
from __future__ import annotations

from conftest import require_export_extra

require_export_extra()  # before the imports below, which need it

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import torch
from conftest import TINY_BACKBONE
from pe_reference import tiny_config, write_thesis_files

from export.build import build_model
from export.rope_rotation import rewrite_rope_rotation

REPO = Path(__file__).resolve().parents[1]


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



def test_command_rewrites_an_old_export_in_place_and_refuses_bad_input(tmp_path, tiny_model):
    from runtime.metadata import METADATA_KEY, read_model_info, to_json

    weights, adapters, _ = write_thesis_files(tmp_path, tiny_config(TINY_BACKBONE), seed=4)
    model = build_model(TINY_BACKBONE, weights=weights, adapters=adapters)
    size = model.config.image_size
    old = exported_ir(model, torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8))  # as exported before
    old.metadata_props[METADATA_KEY] = to_json(read_model_info(tiny_model).document)
    path = tmp_path / "old.onnx"
    images = np.random.default_rng(5).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    want = run(old, path, images)
    command = [sys.executable, "-m", "export.rope_rotation"]
    done = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{2 * model.config.depth} RoPE rotations rewritten"), done.stdout
    rewritten = ir.load(str(path))
    assert ops(rewritten)["Neg"] == 0 and rewritten.metadata_props[METADATA_KEY] == old.metadata_props[METADATA_KEY]
    assert all(np.array_equal(g, w) for g, w in zip(run(rewritten, tmp_path / "again.onnx", images), want))

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(tiny_model.read_bytes()[:1000])
    done = subprocess.run([*command, str(broken)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "broken.onnx" in done.stderr, done.stderr
    assert broken.stat().st_size == 1000 and not list(tmp_path.glob(".*partial"))
