"""`python -m export.bench_mtlora`: the MTLoRA graph vs the DoRA graph (random weights, same backbone).

Writes random checkpoints in both published layouts (export.random_checkpoint), exports both through
`python -m export`'s own path, then per model: GFLOPs per crop counted from the ONNX graph (2 × the
multiply-adds of MatMul/Gemm/Conv nodes with a weight initializer; MatMuls between two activations,
the attention products, listed separately) and ONNX Runtime CPU crops/s, the two models timed in
alternation in one run. Prints a table and writes JSON (default build/bench-mtlora.json). A script, not a test.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from export.build import build_model, model_document
from export.cli import setup_logging
from export.onnx_export import export_onnx
from export.random_checkpoint import write_random_checkpoint

log = logging.getLogger(__name__)
WEIGHT_OPS = ("MatMul", "Gemm", "Conv")


def graph_gflops(path: Path) -> dict[str, float]:
    """GFLOPs per crop of an ONNX graph: {'weights': linear+conv, 'attention': activation×activation MatMuls}.

    The batch is fixed to 1 and shapes are propagated through Shape/Reshape (data_prop), so the
    attention products' token dimensions are known.
    """
    proto = onnx.load(str(path), load_external_data=False)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    del proto.graph.value_info[:]
    proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*proto.graph.value_info, *proto.graph.input, *proto.graph.output]}
    weights = {i.name: list(i.dims) for i in proto.graph.initializer}
    macs = {"weights": 0, "attention": 0}
    for node in proto.graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        out = int(np.prod(shapes[node.output[0]]))
        if not out:
            raise RuntimeError(f"{path}: shape of {node.name}'s output unknown after inference")
        if node.op_type == "Conv":
            macs["weights"] += out * int(np.prod(weights[node.input[1]][1:]))  # Cin/groups × kh × kw per output
            continue
        transposed_a = any(a.name == "transA" and a.i for a in node.attribute)
        k = shapes[node.input[0]][-2 if transposed_a else -1]
        macs["weights" if node.input[1] in weights else "attention"] += out * k
    return {kind: 2 * value / 1e9 for kind, value in macs.items()}


def export_layout(backbone: str, adapter: str, work: Path, seed: int) -> Path:
    """Random checkpoint in the `adapter` layout → `<work>/<adapter>.onnx` (reused when it exists)."""
    path = work / f"{adapter}.onnx"
    if path.exists():
        log.info("reusing %s", path)
        return path
    weights, adapters = write_random_checkpoint(backbone, work / "checkpoints", seed=seed, adapter=adapter)
    model = build_model(backbone, weights=weights, adapters=adapters)
    export_onnx(model, path, model_document(model, weights=weights, adapters=adapters))
    del model
    gc.collect()
    return path


def crops_per_second(sessions: dict[str, ort.InferenceSession], images: np.ndarray, rounds: int) -> dict[str, float]:
    """Median crops/s per model; the models alternate within each round so machine noise hits both."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for name, session in sessions.items():
        session.run(None, {"images": images})  # warm-up
    for r in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"images": images})
            times[name].append(time.perf_counter() - start)
        log.info("round %d/%d: %s", r + 1, rounds, ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()))
    return {name: len(images) / float(np.median(t)) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.bench_mtlora", description=__doc__)
    parser.add_argument("--backbone", default="pe-core-l14-336")
    parser.add_argument("--work", default="build/bench-mtlora", help="checkpoints and ONNX models go here")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--out", default="build/bench-mtlora.json")
    args = parser.parse_args(argv)
    setup_logging()
    work = Path(args.work)
    paths = {adapter: export_layout(args.backbone, adapter, work, seed=0) for adapter in ("dora", "mtlora")}
    flops = {name: graph_gflops(path) for name, path in paths.items()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in paths.items()}
    size = sessions["dora"].get_inputs()[0].shape[1]
    images = np.random.default_rng(0).integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
    speed = crops_per_second(sessions, images, args.rounds)
    rows = [{"model": name, "backbone": args.backbone, "batch": args.batch,
             "gflops_weights": flops[name]["weights"], "gflops_attention": flops[name]["attention"],
             "gflops_total": sum(flops[name].values()), "crops_per_s": speed[name]} for name in paths]
    print(f"{'model':8} {'GFLOPs linear+conv':>19} {'GFLOPs attention':>17} {'GFLOPs total':>13} {'crops/s':>9}")
    for row in rows:
        print(f"{row['model']:8} {row['gflops_weights']:19.1f} {row['gflops_attention']:17.1f} {row['gflops_total']:13.1f} "
              f"{row['crops_per_s']:9.3f}")
    ratio = {"flops_mtlora_over_dora": rows[1]["gflops_total"] / rows[0]["gflops_total"],
             "speed_mtlora_over_dora": rows[1]["crops_per_s"] / rows[0]["crops_per_s"]}
    print(f"MTLoRA / DoRA: {ratio['flops_mtlora_over_dora']:.3f}x GFLOPs, {ratio['speed_mtlora_over_dora']:.3f}x crops/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.machine(), "processor": platform.processor(), "rows": rows} | ratio,
                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
