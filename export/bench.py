"""`python -m export.bench`: PyTorch eager vs ONNX Runtime CPU on random-weight PE-Core models.

For each backbone and batch size: crops/s of both, their ratio, and achieved GFLOP/s (FLOPs counted
by torch's FlopCounterMode) as a fraction of a large float32 matmul's GFLOP/s measured in the same run.
Prints a table and writes JSON (default build/bench-export.json). A script, not a test.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.utils.flop_counter import FlopCounterMode

from export.build import model_document
from export.cli import setup_logging
from export.config import load_backbone_config
from export.heads import make_heads
from export.model import FaceAttributeModel, create_backbone
from export.onnx_export import export_onnx

log = logging.getLogger(__name__)


def seconds_per_call(fn, min_reps: int, min_seconds: float) -> float:
    fn()  # warm-up
    reps, start = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < min_seconds:
        fn()
        reps += 1
    return (time.perf_counter() - start) / reps


def matmul_gflops(n: int = 4096) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / seconds_per_call(lambda: a @ b, 3, 2.0) / 1e9


def flops_per_crop(model: torch.nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter:  # needs autograd on for its module hooks
        model(torch.zeros(1, size, size, 3, dtype=torch.uint8))
    return float(counter.get_total_flops())


def bench_backbone(name: str, batches: list[int], out_dir: Path, peak: float, min_seconds: float,
                   min_reps: int) -> list[dict]:
    config = load_backbone_config(name)
    model = FaceAttributeModel(config, create_backbone(config), make_heads(config.proj_dim, hidden=config.head_hidden),
                               random_weights=True).eval()
    onnx_path = export_onnx(model, out_dir / f"{name}.onnx", model_document(model))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    flops = flops_per_crop(model, config.image_size)
    rows = []
    for batch in batches:
        images = np.random.default_rng(0).integers(0, 256, (batch, config.image_size, config.image_size, 3), np.uint8)
        tensor = torch.from_numpy(images)
        with torch.inference_mode():
            t_torch = seconds_per_call(lambda: model(tensor), min_reps, min_seconds)
        t_ort = seconds_per_call(lambda: session.run(None, {"images": images}), min_reps, min_seconds)
        row = {"backbone": name, "batch": batch, "gflop_per_crop": flops / 1e9,
               "torch_crops_s": batch / t_torch, "ort_crops_s": batch / t_ort, "ort_over_torch": t_torch / t_ort,
               "torch_frac_of_matmul": flops * batch / t_torch / 1e9 / peak,
               "ort_frac_of_matmul": flops * batch / t_ort / 1e9 / peak}
        log.info("%s batch %d: torch %.2f crops/s, ORT %.2f crops/s", name, batch, row["torch_crops_s"], row["ort_crops_s"])
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__)
    parser.add_argument("--backbones", nargs="+", default=["pe-core-t16-384", "pe-core-b16-224", "pe-core-l14-336"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timing per measurement")
    parser.add_argument("--min-reps", type=int, default=2, help="timed calls per measurement, after one warm-up")
    parser.add_argument("--out", default="build/bench-export.json")
    args = parser.parse_args(argv)
    setup_logging()
    out = Path(args.out)
    peak = matmul_gflops()
    log.info("float32 4096² matmul: %.1f GFLOP/s (torch, %d threads)", peak, torch.get_num_threads())
    rows = [row for name in args.backbones for row in bench_backbone(name, args.batches, out.parent / "bench-models",
                                                                      peak, args.min_seconds, args.min_reps)]
    print(f"\nfloat32 matmul peak: {peak:.1f} GFLOP/s; torch threads {torch.get_num_threads()}; {platform.machine()}")
    print(f"| backbone | batch | GFLOP/crop | torch crops/s | ORT crops/s | ORT/torch | torch % of matmul | ORT % of matmul |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backbone']} | {r['batch']} | {r['gflop_per_crop']:.1f} | {r['torch_crops_s']:.2f} | "
              f"{r['ort_crops_s']:.2f} | {r['ort_over_torch']:.2f} | {r['torch_frac_of_matmul']:.0%} | "
              f"{r['ort_frac_of_matmul']:.0%} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"matmul_gflops": peak, "torch_threads": torch.get_num_threads(),
                               "onnxruntime": ort.__version__, "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
