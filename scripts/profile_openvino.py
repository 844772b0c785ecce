"""Where an OpenVINO inference of a facecue model spends its time: per layer type and kernel, from OpenVINO's
own performance counters (PERF_COUNT), at batch 1 on the CPU.

    python scripts/profile_openvino.py build/model.int8.onnx [--threads 1] [--precision bf16] [--runs 3] \
        [--json build/profile.json]

This is how the reference-kernel Concat of timm's RoPE rotation was found (BENCHMARKS.md, "Classifier engines
on this CPU"; export/rope_rotation.py). The input is random uint8 pixels: layer times do not depend on them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile(model: Path, threads: int, precision: str, runs: int) -> dict:
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads),
        "INFERENCE_PRECISION_HINT": precision, "PERF_COUNT": "YES"})
    size = compiled.inputs[0].get_partial_shape()[1].get_length()
    images = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    request = compiled.create_infer_request()
    request.infer({0: images})  # warm-up: first-run allocations are not the model's cost
    times_ms = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({0: images})
        times_ms.append((time.perf_counter() - start) * 1000)
    by_kind: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for layer in request.profiling_info:  # of the last run
        entry = by_kind[(layer.node_type, layer.exec_type)]
        entry[0] += layer.real_time.total_seconds() * 1000
        entry[1] += 1
    total = sum(ms for ms, _ in by_kind.values()) or 1.0
    layers = [{"type": kind, "kernel": kernel, "ms": round(ms, 2), "percent": round(100 * ms / total, 1), "count": n}
              for (kind, kernel), (ms, n) in sorted(by_kind.items(), key=lambda item: -item[1][0])]
    return {"model": str(model), "threads": threads, "precision": precision, "runs_ms": [round(t) for t in times_ms],
            "layers": layers}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a facecue .onnx (FP32, FP16 or INT8 QDQ) or OpenVINO .xml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="bf16", choices=["f32", "bf16", "f16"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="rows printed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return 2
    try:
        result = profile(args.model, args.threads, args.precision, args.runs)
    except ImportError:
        print('error: needs the openvino package (pip install -e ".[openvino]")', file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {args.model}: OpenVINO cannot compile it ({str(error).strip().splitlines()[0]})",
              file=sys.stderr)
        return 2
    print(f"{args.model.name}: {args.threads} thread(s), {args.precision}, runs {result['runs_ms']} ms")
    print(f"{'ms':>8} {'%':>6} {'count':>6}  layer type / kernel")
    for row in result["layers"][:args.top]:
        print(f"{row['ms']:8.1f} {row['percent']:6.1f} {row['count']:6d}  {row['type']} / {row['kernel']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
