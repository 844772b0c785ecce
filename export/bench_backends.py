"""Every inference engine and precision on this machine, side by side: `python -m export.bench_backends`.

    python -m export.bench_backends --models build/b16-224.onnx build/l14-336.onnx --crops FACE_CHIPS_DIR \
        [--engines ort-fp32,ort-int8,ov-f32,ov-bf16,ov-int8-qdq,ov-int8-nncf] [--batches 1 8] [--rounds 3] \
        [--seconds 6] [--threads 1] [--agreement-crops 64] [--json OUT.json]

For each model, engine and round, one worker process (`--worker`) opens the backend through
runtime.backends.open_backend (as the pipeline does), times batch 1 and batch 8 (median over runs of at least
`--seconds`), and on the first round returns its logits on real face crops. Rounds interleave the engines
(round 1: every engine once, then round 2 ...) so machine noise hits them alike; a matmul worker measures the
machine's f32 and bf16 (numpy / torch) and int8 (torch._int_mm) GFLOP/s with the same thread count in every
round. The table has medians over rounds: crops/s, ms per batch, speed over ONNX Runtime FP32 (each round's run
against the same round's ORT FP32 run, then the median of these ratios), % of the matmul
peak of the engine's precision (model FLOPs from the backbone's configs/models YAML), open time (first round:
empty OpenVINO cache; later rounds: cached), and agreement with ONNX Runtime FP32 on the crops: decisive top-1
(the FP32 top-2 margin above 1e-3 × logit scale; calibration/compare.py) and the largest probability difference.

It lives in export/, beside export.bench, because its matmul peaks use torch where it is installed;
runtime/ never imports torch (tests/test_extras.py checks).

Model files per engine: `M.onnx` (FP32), `M.int8.onnx` (python -m calibration int8), `M.nncf.xml`
(python -m calibration int8 --engine nncf); an engine whose file is missing is skipped and said so.
Give `--crops` a folder the INT8 models were not calibrated on (the workers read its first
`--agreement-crops` chips in sorted order), so the agreement is measured on held-out faces.
Results: BENCHMARKS.md, "Classifier engines on this CPU".
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("export.bench_backends")
REPO = Path(__file__).resolve().parent.parent
MARGIN_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Engine:
    name: str
    backend: str  # runtime.config classifier.backend
    precision: str  # classifier.precision (OpenVINO) or "-" for ONNX Runtime
    variant: str  # which file: fp32 | int8 | nncf
    peak: str  # the matmul peak it is compared with: f32 | bf16 | int8


ENGINES = {e.name: e for e in [
    Engine("ort-fp32", "onnxruntime", "-", "fp32", "f32"),
    Engine("ort-int8", "onnxruntime", "-", "int8", "int8"),
    Engine("ov-f32", "openvino", "f32", "fp32", "f32"),
    Engine("ov-bf16", "openvino", "bf16", "fp32", "bf16"),
    Engine("ov-int8-qdq", "openvino", "bf16", "int8", "int8"),
    Engine("ov-int8-nncf", "openvino", "bf16", "nncf", "int8"),
]}


def model_file(model: Path, variant: str) -> Path:
    stem = model.name[:-len(".onnx")] if model.name.endswith(".onnx") else model.stem
    return {"fp32": model, "int8": model.with_name(stem + ".int8.onnx"), "nncf": model.with_name(stem + ".nncf.xml")}[variant]


def flops_per_crop(backbone: str) -> float | None:
    """Multiply-adds × 2 of the ViT blocks and patch embedding (attention pool and heads are < 1 %)."""
    from runtime import configfile

    path = REPO / "configs" / "models" / f"{backbone}.yaml"
    if not path.is_file():
        return None
    spec = configfile.read_yaml(path, ValueError)
    width, depth, patch, size = spec["width"], spec["depth"], spec["patch_size"], spec["image_size"]
    tokens = (size // patch) ** 2 + 1
    linear = (4 + 2 * spec.get("mlp_ratio", 4.0)) * width * width  # qkv, proj, fc1, fc2 weights per block
    attention = 2 * tokens * width  # scores and weighted values, per token
    return 2.0 * depth * tokens * (linear + attention) + 2.0 * tokens * 3 * patch * patch * width


# --- workers (each in its own process) ---------------------------------------------------------------


def time_batches(run, crops: np.ndarray, batch: int, seconds: float, min_runs: int = 3) -> list[float]:
    images = np.ascontiguousarray(np.resize(crops, (batch, *crops.shape[1:])))
    run(images)  # warm-up: first runs allocate and pick kernels
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - begin)
    return times


def precision_label(backend) -> str:
    """"f32", "bf16", or "int8+bf16" (INT8 layers, the float ones around them in bf16)."""
    floats = getattr(backend, "precision", None) or "f32"  # ONNX Runtime's CPU path runs float32
    return f"int8+{floats}" if backend.info.precision.startswith("int8") else floats


def worker(args) -> dict:
    from runtime.backends import open_backend
    from runtime.config import ClassifierConfig
    from runtime.faces import load_face_crops

    engine = ENGINES[args.engine]
    config = ClassifierConfig(backend=engine.backend, precision="auto" if engine.precision == "-" else engine.precision,
                              intra_op_threads=args.threads, max_batch=max(args.batches),
                              openvino_cache_dir=args.cache_dir)
    started = time.perf_counter()
    backend = open_backend(args.model_path, config)
    first = time.perf_counter()
    backend.run(np.zeros((1, backend.info.input_size, backend.info.input_size, 3), np.uint8))
    ready = time.perf_counter()
    crops = load_face_crops(crops_dir=args.crops, size=backend.info.input_size, margin=backend.info.crop_margin,
                            max_faces=args.agreement_crops).crops
    result = {"engine": engine.name, "open_s": first - started, "first_inference_s": ready - first,
              "precision": precision_label(backend), "backbone": backend.info.backbone,
              "input_size": backend.info.input_size, "times": {}}
    for batch in args.batches:
        result["times"][str(batch)] = time_batches(backend.run, crops, batch, args.seconds)
    if args.logits_out:
        parts: dict[str, list] = {}
        for start in range(0, len(crops), max(args.batches)):
            for task, values in backend.run(crops[start:start + max(args.batches)]).items():
                parts.setdefault(task, []).append(values)
        np.savez(args.logits_out, **{task: np.concatenate(v) for task, v in parts.items()})
    backend.close()
    return result


def matmul_worker(args) -> dict:
    """GFLOP/s of a 2048² matmul: numpy float32, torch bfloat16 and torch int8 (`_int_mm`) when torch is here."""
    n, result = 2048, {}

    def rate(run, repeats: int = 5) -> float:
        run()
        best = min(_timed(run) for _ in range(repeats))
        return 2.0 * n**3 / best / 1e9

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    result["f32"] = rate(lambda: a @ a)
    try:
        import torch
    except ImportError:
        return result
    torch.set_num_threads(args.threads)
    t = torch.from_numpy(a)
    result["f32_torch"] = rate(lambda: t @ t)
    b = t.to(torch.bfloat16)
    result["bf16"] = rate(lambda: b @ b)
    try:
        q = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        result["int8"] = rate(lambda: torch._int_mm(q, q))
    except (RuntimeError, AttributeError):  # no int8 CPU kernel in this torch
        pass
    return result


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# --- the driver ----------------------------------------------------------------------------------------


def spawn(arguments: list[str], threads: int, timeout: float) -> dict | None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run([sys.executable, "-m", "export.bench_backends", "--worker", *arguments], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        log.warning("worker %s failed: %s", arguments[:4], done.stderr.strip().splitlines()[-1:] or done.returncode)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(got: dict, want: dict) -> dict:
    from calibration.compare import agreement as task_agreement

    rows = [task_agreement(task, got[task], want[task], MARGIN_TOLERANCE) for task in want]
    return {"top1": min(r.top1_agreement for r in rows), "decisive": {r.task: r.decisive for r in rows},
            "per_task": {r.task: r.top1_agreement for r in rows}, "max_prob_diff": max(r.max_prob_diff for r in rows),
            "samples": rows[0].samples}


def run_all(args) -> dict:
    models = [Path(m) for m in args.models]
    engines = [ENGINES[name] for name in args.engines.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    cache = work / "openvino-cache"  # empty at the start: round 1 opens cold, later rounds from the cache
    runs: list[dict] = []
    peaks: list[dict] = []
    skipped = []
    common = ["--crops", args.crops, "--threads", str(args.threads), "--seconds", str(args.seconds),
              "--agreement-crops", str(args.agreement_crops), "--cache-dir", str(cache), "--batches",
              *map(str, args.batches)]
    try:
        for round_index in range(args.rounds):
            peak = spawn(["--matmul", "--threads", str(args.threads)], args.threads, args.timeout)
            if peak:
                peaks.append(peak)
                log.info("round %d matmul GFLOP/s %s", round_index + 1, {k: round(v) for k, v in peak.items()})
            for model in models:
                for engine in engines:
                    path = model_file(model, engine.variant)
                    if not path.is_file():
                        if round_index == 0:
                            skipped.append(f"{engine.name} on {model.name}: {path.name} not found")
                        continue
                    logits = work / f"{model.stem}-{engine.name}.npz" if round_index == 0 else None
                    result = spawn(["--engine", engine.name, "--model-path", str(path), *common,
                                    *(["--logits-out", str(logits)] if logits else [])], args.threads, args.timeout)
                    if result is None:
                        continue
                    result |= {"model": model.name, "file": path.name, "round": round_index + 1,
                               "logits": str(logits) if logits else None}
                    runs.append(result)
                    log.info("round %d %s %s: %s crops/s, open %.1f s", round_index + 1, model.name, engine.name,
                             {b: round(b_ / float(np.median(t)), 2) for b, t in result["times"].items()
                              for b_ in [int(b)]}, result["open_s"])
        return summarise(runs, peaks, models, engines, args) | {"skipped": skipped}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def side_by_side(mine: dict[int, float], baseline: dict[int, float]) -> list[float]:
    """Speed over ort-fp32 per round, each against the ort-fp32 run of the same round (minutes apart, so
    machine noise that comes and goes between rounds cancels); rounds where either is missing are left out."""
    return [mine[r] / baseline[r] for r in sorted(mine) if r in baseline]


def summarise(runs: list[dict], peaks: list[dict], models: list[Path], engines: list[Engine], args) -> dict:
    peak = {key: float(np.median([p[key] for p in peaks if key in p])) for key in {k for p in peaks for k in p}}
    rows = []
    for model in models:
        model_runs = [r for r in runs if r["model"] == model.name]
        reference_logits = next((r["logits"] for r in model_runs if r["engine"] == "ort-fp32" and r["logits"]), None)
        want = dict(np.load(reference_logits)) if reference_logits else None
        baseline: dict[int, dict[int, float]] = {}  # batch → round → ort-fp32 crops/s
        for engine in engines:
            mine = [r for r in model_runs if r["engine"] == engine.name]
            if not mine:
                continue
            first = mine[0]
            flops = flops_per_crop(first["backbone"])
            agree = None
            if want is not None and first["logits"]:
                agree = agreement(dict(np.load(first["logits"])), want)
            for batch in args.batches:
                by_round = {r["round"]: batch / float(np.median(r["times"][str(batch)])) for r in mine}
                per_round = list(by_round.values())
                crops_per_s = float(np.median(per_round))
                if engine.name == "ort-fp32":
                    baseline[batch] = by_round
                ratios = side_by_side(by_round, baseline.get(batch, {}))
                peak_gflops = peak.get(engine.peak) or peak.get("bf16" if engine.peak == "int8" else "f32")
                rows.append({
                    "model": model.name, "backbone": first["backbone"], "engine": engine.name, "file": first["file"],
                    "precision": first["precision"], "batch": batch, "crops_per_s": crops_per_s,
                    "crops_per_s_rounds": per_round, "ms_per_batch": batch / crops_per_s * 1000.0,
                    "vs_ort_fp32": float(np.median(ratios)) if ratios else None, "vs_ort_fp32_rounds": ratios,
                    "gflops": flops * crops_per_s / 1e9 if flops else None,
                    "pct_of_peak": (100.0 * flops * crops_per_s / 1e9 / peak_gflops) if flops and peak_gflops else None,
                    "peak_used": engine.peak if engine.peak in peak else ("bf16" if engine.peak == "int8" else "f32"),
                    "open_s_first": first["open_s"], "open_s_cached": float(np.median([r["open_s"] for r in mine[1:]]))
                    if len(mine) > 1 else None, "first_inference_s": first["first_inference_s"],
                    "agreement": agree,
                })
    return {"machine": machine(), "threads": args.threads, "rounds": args.rounds, "seconds": args.seconds,
            "batches": args.batches, "crops": args.crops, "agreement_crops": args.agreement_crops,
            "matmul_gflops": peak, "matmul_rounds": peaks, "rows": rows}


def machine() -> dict:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    versions = {}
    for package in ("onnxruntime", "openvino", "numpy", "torch"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            pass
    return {"cpu": name, "cores": os.cpu_count(), "platform": platform.platform(),
            "flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                                     "amx_int8", "amx_tile"}),
            "versions": versions, "load_average": os.getloadavg()}


def table(summary: dict) -> str:
    lines = [f"{'model':<16}{'engine':<14}{'prec':<10}{'batch':>5}{'crops/s':>9}{'ms':>9}{'×ORT32':>8}{'%peak':>7}"
             f"{'open s':>8}{'cached':>8}{'top-1':>8}{'max Δp':>8}"]
    for row in summary["rows"]:
        agree = row["agreement"]
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        lines.append(f"{row['model']:<16}{row['engine']:<14}{row['precision']:<10}{row['batch']:>5}"
                     f"{row['crops_per_s']:>9.2f}{row['ms_per_batch']:>9.0f}{fmt(row['vs_ort_fp32'], '8.2f'):>8}"
                     f"{fmt(row['pct_of_peak'], '6.1f'):>7}{row['open_s_first']:>8.1f}{fmt(row['open_s_cached'], '8.1f'):>8}"
                     f"{fmt(agree and agree['top1'] * 100, '7.1f'):>8}{fmt(agree and agree['max_prob_diff'], '8.4f'):>8}")
    peak = summary["matmul_gflops"]
    lines.append("matmul GFLOP/s (2048², median of rounds): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(peak.items())))
    lines.append(f"{summary['threads']} inference thread(s), {summary['rounds']} interleaved rounds; top-1: decisive "
                 f"agreement with ort-fp32 on {summary['agreement_crops']} face crops (min over tasks)")
    for note in summary.get("skipped", []):
        lines.append(f"skipped: {note}")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m export.bench_backends", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="FP32 facecue .onnx files (INT8 and NNCF files found beside them)")
    parser.add_argument("--crops", help="folder of face chips (agreement and timing inputs)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, from {','.join(ENGINES)}")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per engine, batch and round (≥ 3 runs)")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: the runtime's default, every core)")
    parser.add_argument("--agreement-crops", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker")
    parser.add_argument("--json", help="write the summary here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--matmul", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--logits-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads == 0:
        args.threads = max(1, (os.cpu_count() or 2) - 1)
    if args.worker:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(matmul_worker(args) if args.matmul else worker(args)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.models or not args.crops:
        print("error: --models and --crops are required", file=sys.stderr)
        return 2
    unknown = [name for name in args.engines.split(",") if name not in ENGINES]
    missing = [m for m in args.models if not Path(m).is_file()]
    if unknown or missing or not Path(args.crops).is_dir():
        print(f"error: {'unknown engines ' + str(unknown) if unknown else ''}{' missing models ' + str(missing) if missing else ''}"
              f"{' no folder ' + args.crops if not Path(args.crops).is_dir() else ''}".strip(), file=sys.stderr)
        return 2
    from runtime.faces import FacesError, image_files
    try:
        image_files(Path(args.crops))  # the workers would each fail on a folder without images
    except FacesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        summary = run_all(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(table(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
