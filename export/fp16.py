"""`python -m export.fp16 model.onnx [--out model.fp16.onnx] [--images DIR | --crops DIR]`: an FP16 copy
of a facecue ONNX model, verified against the FP32 model with ONNX Runtime before it is written.

What stays FP32 (`FP32_RULES`): LayerNormalization (ViT residuals overflow FP16 in a decomposed LN),
Softmax, reductions, the RoPE rotation (PE runs it under autocast-off in PyTorch) and
the attention pooling, chosen by op type and by the exporter's node scopes (`pkg.torch.onnx.*`
metadata). Everything else, weights and MatMuls included, is FP16. The uint8 input is cast inside the
graph as before; the logits are cast back to float32, so the model contract does not change and a
strongly typed TensorRT build follows these types exactly (NVIDIA TensorRT Developer Guide, "Strongly Typed Networks").

Hand-written rather than onnxconverter-common's `convert_float_to_float16` because, in 1.16, its block
lists still convert the blocked nodes' initializers to FP16 (it collects them after renaming the inputs
to casts), it leaves existing Casts' `to` unpatched (issue #320), and it leaves FP32→FP16→FP32 round
trips inside FP32 islands. Here every node gets one precision and casts sit only on the edges.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.metadata import METADATA_KEY, ModelMetadataError, read_model_info, to_json
from facecue import interrupts
from facecue.progress import Progress

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
PROTOBUF_LIMIT = 2 * 1024**3
DEFAULT_TOLERANCE = 1e-2  # max logit error relative to scale
DEFAULT_MIN_AGREEMENT = 0.99  # top-1 agreement where the FP32 top-2 margin exceeds the tolerance


@dataclass(frozen=True)
class Fp32Rules:
    """Which nodes stay FP32: by op type, or by the module scope the exporter recorded for them."""

    op_types: tuple[str, ...]
    module_scopes: tuple[str, ...]  # a node inside a module whose path ends with one of these
    module_classes: tuple[str, ...]  # a node directly in a module of this class (not in a child module) ...
    except_calls: tuple[str, ...]  # ... unless it comes from one of these calls (SDPA stays FP16, Softmax aside)


FP32_RULES = Fp32Rules(
    op_types=("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceMax",
              "ReduceMin", "ReduceProd", "ReduceL2", "ReduceLogSumExp", "Pow", "Sqrt"),
    module_scopes=("attn_pool",),  # PE's attention pooling: one latent query over all tokens
    module_classes=("AttentionRope",),  # timm applies the RoPE rotation inline in this module's forward
    except_calls=("scaled_dot_product_attention",),
)


# --- conversion ------------------------------------------------------------------------------------


def node_scope(node: onnx.NodeProto) -> tuple[list[str], list[str]]:
    """(name scopes, class hierarchy) that torch's dynamo exporter stores on each node; empty if absent."""
    props = {p.key: p.value for p in node.metadata_props}
    scopes = ast.literal_eval(props.get("pkg.torch.onnx.name_scopes", "[]"))
    classes = ast.literal_eval(props.get("pkg.torch.onnx.class_hierarchy", "[]"))
    return scopes, classes


def keeps_fp32(node: onnx.NodeProto, rules: Fp32Rules = FP32_RULES) -> bool:
    if node.op_type in rules.op_types:
        return True
    scopes, classes = node_scope(node)
    if any(scope.split(".")[-1] in rules.module_scopes for scope in scopes):
        return True
    in_class = len(classes) >= 2 and classes[-2].split(".")[-1] in rules.module_classes
    call = scopes[-1] if scopes else ""
    return in_class and not call.startswith(rules.except_calls)


def runs_in_fp16(graph: onnx.GraphProto, rules: Fp32Rules = FP32_RULES) -> list[bool]:
    """Per node, whether it computes in FP16. Nodes the optimizer made (no exporter scope, e.g. the Split of
    the RoPE table) follow their readers: FP32 when every reader is FP32, so constants are not rounded."""
    nodes = list(graph.node)
    in_fp16 = [not keeps_fp32(node, rules) for node in nodes]
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            readers.setdefault(name, []).append(index)
    for index in reversed(range(len(nodes))):  # readers come later in a topologically sorted graph
        reading = [j for out in nodes[index].output for j in readers.get(out, [])]
        if in_fp16[index] and not node_scope(nodes[index])[0] and reading and not any(in_fp16[j] for j in reading):
            in_fp16[index] = False
    return in_fp16


def convert_to_fp16(model: onnx.ModelProto, rules: Fp32Rules = FP32_RULES) -> onnx.ModelProto:
    """A new model: FP16 everywhere except the nodes `rules` keep FP32, float32 graph outputs."""
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise ValueError("models with subgraphs (If/Loop/Scan) are not supported by the FP16 conversion")
    elem = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    elem |= {t.name: t.data_type for t in graph.initializer}

    def is_float(name: str) -> bool:
        return elem.get(name) == TensorProto.FLOAT

    nodes = list(zip(graph.node, runs_in_fp16(graph, rules)))
    half = _convert_initializers(graph, nodes, is_float)
    for node, in_fp16 in nodes:
        if in_fp16:
            _convert_node_constants(node)
            half |= {out for out in node.output if is_float(out)}

    casts: dict[tuple[str, int], str] = {}  # (tensor, to) → the cast's output: one cast per tensor and type
    new_nodes: list[onnx.NodeProto] = []
    for node, in_fp16 in nodes:
        for i, name in enumerate(node.input):
            if name and is_float(name) and (name in half) != in_fp16:
                node.input[i] = _cast(name, TensorProto.FLOAT16 if in_fp16 else TensorProto.FLOAT, casts, new_nodes)
        new_nodes.append(node)
    _cast_outputs_to_float(graph, half, new_nodes)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _convert_initializers(graph: onnx.GraphProto, nodes: list, is_float) -> set[str]:
    """FP32 initializers read only by FP16 nodes become FP16; shared ones stay FP32 (casts follow)."""
    read_in_fp32: dict[str, bool] = {}
    for node, in_fp16 in nodes:
        for name in node.input:
            read_in_fp32[name] = read_in_fp32.get(name, False) or not in_fp16
    half = set()
    for tensor in graph.initializer:
        if is_float(tensor.name) and read_in_fp32.get(tensor.name) is False:
            tensor.CopyFrom(_to_half(tensor))
            half.add(tensor.name)
    return half


def _convert_node_constants(node: onnx.NodeProto) -> None:
    """Float tensors in attributes (Constant, ConstantOfShape) and Cast targets follow the node to FP16."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
            attr.t.CopyFrom(_to_half(attr.t))
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16


def _to_half(tensor: onnx.TensorProto) -> onnx.TensorProto:
    values = numpy_helper.to_array(tensor)
    return numpy_helper.from_array(np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16), tensor.name)


def _cast(name: str, to: int, casts: dict, new_nodes: list) -> str:
    if (name, to) not in casts:
        out = f"{name}_to_{'fp16' if to == TensorProto.FLOAT16 else 'fp32'}"
        new_nodes.append(helper.make_node("Cast", [name], [out], name=f"cast_{out}", to=to))
        casts[(name, to)] = out
    return casts[(name, to)]


def _cast_outputs_to_float(graph: onnx.GraphProto, half: set[str], new_nodes: list) -> None:
    """Graph outputs keep their names and float32: the FP16 tensor is renamed and cast at the end."""
    for output in graph.output:
        if output.name not in half:
            continue
        inner = f"{output.name}_fp16"
        for node in new_nodes:
            node.input[:] = [inner if n == output.name else n for n in node.input]
            node.output[:] = [inner if n == output.name else n for n in node.output]
        new_nodes.append(helper.make_node("Cast", [inner], [output.name], name=f"cast_{output.name}_to_fp32",
                                          to=TensorProto.FLOAT))


def fp32_op_types(model: onnx.ModelProto) -> dict[str, set[str]]:
    """Op type → the float types its nodes compute in (from the tensors they read), for tests and logs."""
    elem = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    elem |= {t.name: t.data_type for t in model.graph.initializer}
    names = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16"}
    seen: dict[str, set[str]] = {}
    for node in model.graph.node:
        if node.op_type == "Cast":
            continue
        types = {names[elem[i]] for i in node.input if elem.get(i) in names}
        seen.setdefault(node.op_type, set()).update(types)
    return seen


# --- verification ----------------------------------------------------------------------------------


@dataclass
class TaskParity:
    task: str
    max_abs_error: float
    relative_error: float  # max |fp16 - fp32| / max(1, max |fp32|)
    top1_agreement: float  # over decisive samples
    decisive: int  # samples whose FP32 top-2 margin exceeds the tolerance
    samples: int

    def passes(self, tolerance: float, min_agreement: float) -> bool:
        return self.relative_error <= tolerance and self.top1_agreement >= min_agreement


def compare_logits(got: np.ndarray, ref: np.ndarray, task: str, tolerance: float) -> TaskParity:
    top2 = np.sort(ref, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > tolerance
    same = got.argmax(1) == ref.argmax(1)
    error = float(np.abs(got - ref).max())
    return TaskParity(task, error, error / max(1.0, float(np.abs(ref).max())),
                      float(same[decisive].mean()) if decisive.any() else 1.0, int(decisive.sum()), len(ref))


def run_onnx(path: str | Path, images: np.ndarray, batch: int = 8, bar: Progress | None = None) -> dict[str, np.ndarray]:
    """The model's float32 logits per task on `images` (CPU), counted on `bar` when given."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names, input_name = [o.name for o in session.get_outputs()], session.get_inputs()[0].name
    parts = []
    for start in range(0, len(images), batch):
        parts.append(session.run(names, {input_name: images[start:start + batch]}))
        if bar is not None:
            bar.update(len(parts[-1][0]))
    return {name: np.concatenate([p[k] for p in parts]).astype(np.float32) for k, name in enumerate(names)}


def check_parity(fp32_path, fp16_path, images: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> list[TaskParity]:
    with Progress("FP16 parity check (FP32, then FP16)", log, total=2 * len(images), unit="images") as bar:
        ref, got = run_onnx(fp32_path, images, bar=bar), run_onnx(fp16_path, images, bar=bar)
    return [compare_logits(got[task], ref[task], task, tolerance) for task in ref]


def random_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


# --- the whole step --------------------------------------------------------------------------------


class Fp16ParityError(RuntimeError):
    """The FP16 model disagrees with the FP32 model beyond tolerance; nothing was written."""


def default_fp16_path(fp32_path: str | Path) -> Path:
    path = Path(fp32_path)
    return path.with_name(path.stem + ".fp16.onnx")


def export_fp16(fp32_path: str | Path, out_path: str | Path | None = None, images: np.ndarray | None = None,
                tolerance: float = DEFAULT_TOLERANCE, min_agreement: float = DEFAULT_MIN_AGREEMENT,
                samples: int = 16) -> tuple[Path, list[TaskParity]]:
    """Convert, verify against FP32 on `images` (random ones if None), then write `out_path` atomically."""
    fp32_path = Path(fp32_path)
    info = read_model_info(fp32_path)  # refuses non-facecue models with a clear message
    if info.precision != "fp32":
        raise ModelMetadataError(f"{fp32_path}: precision is {info.precision!r}; the FP16 conversion needs an fp32 model")
    out_path = Path(out_path) if out_path else default_fp16_path(fp32_path)
    if images is None:
        images = random_images(samples, info.input_size)
    with Progress(f"converting {fp32_path} to FP16", log, unit=None):
        model = convert_to_fp16(onnx.load(str(fp32_path)))
    document = dict(info.document, precision="fp16")
    props = {p.key: p.value for p in model.metadata_props} | {METADATA_KEY: to_json(document)}
    onnx.helper.set_model_props(model, props)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.") as tmp:
        tmp_model = Path(tmp) / out_path.name
        external = model.ByteSize() > PROTOBUF_LIMIT
        onnx.save(model, str(tmp_model), save_as_external_data=external, location=out_path.name + ".data")
        parity = check_parity(fp32_path, tmp_model, images, tolerance)
        failed = [p for p in parity if not p.passes(tolerance, min_agreement)]
        if failed:
            raise Fp16ParityError(f"FP16 model outside tolerance, not written: {[asdict(p) for p in failed]}")
        interrupts.check()
        if external:
            (Path(tmp) / (out_path.name + ".data")).replace(Path(str(out_path) + ".data"))
        tmp_model.replace(out_path)
    log.info("wrote %s", out_path)
    return out_path, parity


def format_parity(parity: list[TaskParity]) -> str:
    lines = [f"{'task':8s} {'max |err|':>10s} {'rel err':>9s} {'top-1':>7s} {'decisive':>9s}"]
    lines += [f"{p.task:8s} {p.max_abs_error:10.2e} {p.relative_error:9.2e} {p.top1_agreement:7.1%} "
              f"{p.decisive:4d}/{p.samples:<4d}" for p in parity]
    return "\n".join(lines)


def main(argv=None) -> int:
    from export.cli import setup_logging
    from runtime.faces import add_face_arguments

    parser = argparse.ArgumentParser(prog="python -m export.fp16", description=__doc__.split("\n\n")[0],
                                     epilog="example: facecue fp16 build/model.onnx --crops DIR_OF_FACE_CHIPS")
    parser.add_argument("model", help="an FP32 facecue ONNX model")
    parser.add_argument("--out", help="default: <model>.fp16.onnx beside the input")
    add_face_arguments(parser, required=False)
    parser.add_argument("--samples", type=int, default=16, help="random images when no faces are given")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--json", help="write the parity table as JSON here")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        images = None
        if args.images or args.crops:
            from runtime.faces import load_face_crops  # needs MediaPipe and OpenCV

            info = read_model_info(args.model)
            images = load_face_crops(images_dir=args.images, crops_dir=args.crops, size=info.input_size,
                                     margin=info.crop_margin).crops
        out, parity = export_fp16(args.model, args.out, images, args.tolerance, samples=args.samples)
    except (FileNotFoundError, ModelMetadataError, ValueError, Fp16ParityError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, Fp16ParityError) else 1
    print(format_parity(parity))
    print(f"wrote {out}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(p) for p in parity], indent=2))
    return 0


if __name__ == "__main__":  # through facecue.cli like every command: Ctrl-C handling, missing extras
    from facecue.cli import run_module

    sys.exit(run_module("export.fp16", "python -m export.fp16", None))
