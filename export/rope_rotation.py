"""The RoPE rotation in the exported graph as one Gather and a sign, in place of timm's slice-and-stack.

timm's `rot(x)` turns each pair (x0, x1) of a query or key into (-x1, x0). torch's exporter writes it as
two strided Slices, a Neg, two Unsqueezes, a Concat that interleaves them on a new last axis, and a
Reshape back. OpenVINO's CPU plugin runs that interleaving Concat with its reference kernel: 14 % of a
PE-Core-L14-336 INT8 inference on the benchmark CPU (BENCHMARKS.md, "Classifier engines on this CPU").
`Gather(x, [1, 0, 3, 2, ...]) * [-1, 1, -1, 1, ...]` is the same function bit for bit (a permutation and a
multiplication by ±1 are exact in every float format) and runs with a vectorised kernel in every engine.

The pass matches the exact subgraph, so a graph without it (another backbone, a future exporter) is left
as it is; `rewrite_rope_rotation` returns how many rotations it replaced. `python -m export.rope_rotation
MODEL.onnx` rewrites a model exported before export did this. Hand-written on onnx_ir (the
exporter's own graph library): the subgraph is seven nodes, and onnxscript's pattern rewriter would add a
dependency for one rule.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir


def _const_ints(value: ir.Value | None) -> list[int] | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else [int(v) for v in np.asarray(tensor.numpy()).ravel()]


def _attr_int(node: ir.Node, name: str) -> int | None:
    attr = node.attributes.get(name)
    return None if attr is None else int(attr.value)


def _strided_slice(value: ir.Value) -> tuple[ir.Value, int, int] | None:
    """(data, start, axis) of `data[..., start::2]` on one axis, else None."""
    node = value.producer()
    if node is None or node.op_type != "Slice" or len(node.inputs) != 5:
        return None
    starts, ends, axes, steps = (_const_ints(v) for v in node.inputs[1:])
    if None in (starts, ends, axes, steps) or len(starts) != 1 or steps != [2] or ends[0] < 2**62:
        return None
    return node.inputs[0], starts[0], axes[0]


def _unsqueezed_last(value: ir.Value) -> ir.Value | None:
    node = value.producer()
    if node is None or node.op_type != "Unsqueeze" or _const_ints(node.inputs[1]) != [-1]:
        return None
    return node.inputs[0]


def _match(concat: ir.Node) -> tuple[ir.Value, ir.Node] | None:
    """(x, final Reshape) when `concat` is the interleaving Concat of rot(x), else None."""
    if concat.op_type != "Concat" or _attr_int(concat, "axis") != -1 or len(concat.inputs) != 2:
        return None
    first, second = (_unsqueezed_last(v) for v in concat.inputs)
    if first is None or second is None or first.producer() is None or first.producer().op_type != "Neg":
        return None
    odd, even = _strided_slice(first.producer().inputs[0]), _strided_slice(second)
    if odd is None or even is None or odd[0] is not even[0] or (odd[1], even[1]) != (1, 0) or odd[2] != even[2]:
        return None
    x, axis = odd[0], odd[2]
    uses = list(concat.outputs[0].uses())
    reshape = uses[0].node if len(uses) == 1 else None
    if x.shape is None or reshape is None or reshape.op_type != "Reshape":
        return None
    rank = len(x.shape)
    target = _const_ints(reshape.inputs[1])
    width = x.shape[axis]
    if axis not in (-1, rank - 1) or not isinstance(width, int) or width % 2 or target is None \
            or len(target) != rank or target[-1] != width:
        return None
    return x, reshape


def rewrite_rope_rotation(model: ir.Model) -> int:
    """Replace every rot(x) subgraph of `model`'s main graph; the number replaced."""
    graph = model.graph
    replaced = 0
    for concat in list(graph):
        found = _match(concat)
        if found is None:
            continue
        x, reshape = found
        width = x.shape[-1]
        dtype = x.dtype.numpy() if x.dtype is not None else np.float32
        perm = ir.Value(name=f"{concat.name}_rot_perm", const_value=ir.tensor(
            np.arange(width, dtype=np.int64).reshape(-1, 2)[:, ::-1].ravel().copy()))
        sign = ir.Value(name=f"{concat.name}_rot_sign", const_value=ir.tensor(
            np.tile(np.array([-1, 1], dtype=dtype), width // 2)))
        for constant in (perm, sign):
            graph.register_initializer(constant)
        scope = dict(concat.metadata_props)  # module scope: export/fp16.py keeps the rotation FP32 by it
        gather = ir.Node("", "Gather", [x, perm], [ir.Attr("axis", ir.AttributeType.INT, -1)],
                         name=f"{concat.name}_rot_gather", metadata_props=dict(scope))
        multiply = ir.Node("", "Mul", [gather.outputs[0], sign], name=f"{concat.name}_rot_sign",
                           metadata_props=dict(scope))
        out, target = reshape.outputs[0], reshape.inputs[1]
        multiply.outputs[0].shape, multiply.outputs[0].type = out.shape, out.type
        gather.outputs[0].shape, gather.outputs[0].type = x.shape, x.type
        ir.convenience.replace_nodes_and_values(graph, reshape, [reshape], [gather, multiply], [out],
                                                [multiply.outputs[0]])
        _drop_if_unused(graph, target)
        _remove_dead(graph, concat)
        replaced += 1
    return replaced


def _remove_dead(graph: ir.Graph, node: ir.Node) -> None:
    """Remove `node` and then each producer of its inputs that nothing else reads."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.graph is not graph or any(list(out.uses()) for out in current.outputs) \
                or any(out in graph.outputs for out in current.outputs):
            continue
        inputs = [v for v in current.inputs if v is not None]
        graph.remove(current, safe=True)
        stack.extend(v.producer() for v in inputs if v.producer() is not None)
        for value in inputs:
            _drop_if_unused(graph, value)


def _drop_if_unused(graph: ir.Graph, value: ir.Value) -> None:
    """Remove an initializer (a shape or index constant) that only removed nodes read."""
    if value.is_initializer() and not list(value.uses()) and value.name in graph.initializers:
        del graph.initializers[value.name]


def rewrite_file(model_path: Path, out_path: Path) -> int:
    """Rewrite a facecue ONNX file made before export did this (FP32, FP16 or INT8 QDQ: their outputs do not
    change, so an INT8 model need not be calibrated again); the model appears at `out_path` complete or not at all."""
    from facecue import interrupts
    from runtime.metadata import read_model_info

    read_model_info(model_path)  # a facecue model, or one clear error
    model = ir.load(str(model_path))
    replaced = rewrite_rope_rotation(model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    staged = out_path.with_name(f".{out_path.name}.partial")
    try:
        ir.save(model, str(staged))
        interrupts.check()
        staged.replace(out_path)
    finally:
        staged.unlink(missing_ok=True)
    return replaced


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.rope_rotation", description=__doc__.split("\n\n")[0],
                                     epilog="example: python -m export.rope_rotation build/model.int8.onnx")
    parser.add_argument("model", help="a facecue ONNX model (one file, no external data)")
    parser.add_argument("--out", help="default: rewrite the model in place")
    args = parser.parse_args(argv)
    from runtime.metadata import ModelMetadataError

    model = Path(args.model)
    try:
        if Path(str(model) + ".data").exists():
            raise ValueError(f"{model} has external data: export it again instead (export writes the rewrite)")
        replaced = rewrite_file(model, Path(args.out) if args.out else model)
    except (FileNotFoundError, ModelMetadataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{replaced} RoPE rotations rewritten; wrote {args.out or model}")
    return 0


if __name__ == "__main__":  # through facecue.cli like every command: Ctrl-C handling, one-line errors
    from facecue.cli import run_module

    sys.exit(run_module("export.rope_rotation", "python -m export.rope_rotation", "export"))
