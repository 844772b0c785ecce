"""`python scripts/gpu_check.py [--out build/gpu_check.json] [--models tiny,b16-224] [--no-gpu] [--verbose]`

On an NVIDIA machine: build and run whatever it supports (PyTorch CUDA eager FP32/FP16, ONNX Runtime
CUDA/TensorRT EPs with the runtime's own provider options, the FP16 ONNX, a native TensorRT engine) on a
tiny model and a full-size model made from random weights on the spot; compare each with ONNX Runtime CPU
FP32 (top-1 agreement, max logit error relative to scale) and time batch 1/4/8 (CUDA events for PyTorch
and the native engine, wall clock after the result is on the host for ONNX Runtime, which exposes no stream). Prints one table, one line per part, with the reason when a part cannot run.
Downloads nothing. Needs torch, timm, peft, onnx, onnxruntime, numpy, safetensors, pyyaml; the ONNX
export also needs onnxscript (`--vendor DIR` puts unpacked pure-Python packages from DIR on sys.path).
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from facecue import telemetry as _telemetry  # noqa: E402,F401  (before onnxruntime: no usage reports)

log = logging.getLogger("gpu_check")
MODELS = {"tiny": "pe-core-test-tiny", "b16-224": "pe-core-b16-224", "l14-336": "pe-core-l14-336"}
BATCHES = (1, 4, 8)
SAMPLES = 16  # parity images per model (random uint8: the check is numerical, not about faces)


@dataclass
class Row:
    model: str
    part: str
    status: str  # "ok", "not available", "failed"
    reason: str = ""
    top1: float | None = None  # agreement with ORT CPU FP32 where its top-2 margin > 1e-2
    rel_err: float | None = None  # max |logit error| / max(1, max |reference|), worst task
    ms: dict[int, float] = field(default_factory=dict)  # batch → milliseconds per batch


def compare(got: dict, ref: dict, tolerance: float = 1e-2) -> tuple[float, float]:
    from export.fp16 import compare_logits

    parity = [compare_logits(np.asarray(got[t], np.float32), ref[t], t, tolerance) for t in ref]
    return min(p.top1_agreement for p in parity), max(p.relative_error for p in parity)


def time_wall(run, images: np.ndarray, repeats: int) -> dict[int, float]:
    result = {}
    for batch in BATCHES:
        chunk = np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])))
        run(chunk)  # warm-up (and TensorRT EP engine build for new shapes)
        start = time.perf_counter()
        for _ in range(repeats):
            run(chunk)
        result[batch] = (time.perf_counter() - start) / repeats * 1e3
    return result


def run_batched(run, images: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
    parts = [run(images[i:i + batch]) for i in range(0, len(images), batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# --- the parts ------------------------------------------------------------------------------------


def torch_parts(name, model, images, ref, gpu: bool, repeats: int) -> list[Row]:
    import torch

    parts = ["PyTorch CUDA eager FP32", "PyTorch CUDA eager FP16 (autocast)"]
    if not gpu:
        return [Row(name, p, "not available", "no CUDA GPU (torch.cuda.is_available() is False or --no-gpu)") for p in parts]
    model = model.cuda()
    rows = []
    for part, half in zip(parts, (False, True)):
        def run(batch: np.ndarray, half=half):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=half):
                outputs = model(torch.from_numpy(batch).cuda())
            return dict(zip(model.task_names, (o.float().cpu().numpy() for o in outputs)))

        top1, err = compare(run_batched(run, images), ref)
        ms = {}
        for batch in BATCHES:
            x = torch.from_numpy(np.resize(images, (batch, *images.shape[1:]))).cuda()
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=half):
                model(x)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(repeats):
                    model(x)
                end.record()
            torch.cuda.synchronize()
            ms[batch] = start.elapsed_time(end) / repeats
        rows.append(Row(name, part, "ok", "CUDA events", top1, err, ms))
    model.cpu()
    return rows


def ort_part(name, part, path, provider, ref, images, repeats, options=None) -> Row:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in available:
        return Row(name, part, "not available", f"onnxruntime {ort.__version__} has {available} (needs onnxruntime-gpu)")
    fallback = [] if provider == "CPUExecutionProvider" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), providers=[(provider, options or {}), *fallback])
    if session.get_providers()[0] != provider:
        return Row(name, part, "not available", f"{provider} did not load (session has {session.get_providers()})")
    names = [o.name for o in session.get_outputs()]

    def run(batch):
        return dict(zip(names, session.run(names, {session.get_inputs()[0].name: batch})))

    top1, err = compare(run_batched(run, images), ref)
    return Row(name, part, "ok", "wall clock", top1, err, time_wall(run, images, repeats))


def runtime_trt_options(fp16_path: Path, workdir: Path) -> dict:
    """The TensorRT EP options the runtime builds from config (profile 1/4/8, caches, LN FP32 fallback)."""
    from runtime.backends.providers import tensorrt_options
    from runtime.config import ClassifierConfig
    from runtime.metadata import read_model_info

    config = ClassifierConfig(max_batch=max(BATCHES), opt_batch=4, cache_dir=str(workdir / "trt-cache"))
    return tensorrt_options(read_model_info(fp16_path), config)


def time_cuda_events(run, images: np.ndarray, repeats: int, stream) -> dict[int, float]:
    """ms per batch between two CUDA events on the engine's stream (each run ends with its results on the host)."""
    from runtime.backends.tensorrt import cuda_check, import_cudart

    cudart, result = import_cudart(), {}
    for batch in BATCHES:
        chunk = np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])))
        run(chunk)  # warm-up
        start, end = (cuda_check(cudart, cudart.cudaEventCreate(), "cudaEventCreate") for _ in range(2))
        cuda_check(cudart, cudart.cudaEventRecord(start, stream), "cudaEventRecord")
        for _ in range(repeats):
            run(chunk)
        cuda_check(cudart, cudart.cudaEventRecord(end, stream), "cudaEventRecord")
        cuda_check(cudart, cudart.cudaEventSynchronize(end), "cudaEventSynchronize")
        result[batch] = cuda_check(cudart, cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime") / repeats
        for event in (start, end):
            cudart.cudaEventDestroy(event)
    return result


def tensorrt_part(name, fp16_path, workdir, ref, images, repeats) -> Row:
    part = "TensorRT engine FP16 (native, cuda-python)"
    from runtime.backends import BackendError

    try:
        from runtime.backends.tensorrt import import_cudart, import_tensorrt

        import_tensorrt(), import_cudart()
    except BackendError as error:
        return Row(name, part, "not available", str(error))
    from export.tensorrt_build import build_engine
    from runtime.backends import open_backend
    from runtime.config import ClassifierConfig

    engine = build_engine(fp16_path, workdir / "model.engine", max_batch=max(BATCHES), opt_batch=4)
    backend = open_backend(engine, ClassifierConfig(backend="tensorrt", max_batch=max(BATCHES)))
    try:
        top1, err = compare(run_batched(backend.run, images), ref)
        return Row(name, part, "ok", "CUDA events, host to host", top1, err,
                   time_cuda_events(backend.run, images, repeats, backend.stream))
    finally:
        backend.close()


# --- one model ------------------------------------------------------------------------------------


def check_model(name: str, workdir: Path, gpu: bool, repeats: int) -> list[Row]:
    import torch

    from export.build import build_model, model_document
    from export.random_checkpoint import write_random_checkpoint

    backbone = MODELS[name]
    log.info("[%s] random-weight checkpoint and model", name)
    weights, adapters = write_random_checkpoint(str(REPO / "configs" / "models" / f"{backbone}.yaml"), workdir / "ckpt")
    model = build_model(str(REPO / "configs" / "models" / f"{backbone}.yaml"), weights=weights, adapters=adapters)
    size = model.config.image_size
    images = np.random.default_rng(0).integers(0, 256, (SAMPLES, size, size, 3), dtype=np.uint8)
    rows: list[Row] = []

    onnx_path = fp16_path = None
    try:
        from export.onnx_export import export_onnx

        log.info("[%s] ONNX export", name)
        onnx_path = export_onnx(model, workdir / "model.onnx", model_document(model, weights=weights, adapters=adapters))
    except Exception as error:  # onnxscript missing, exporter errors: report and go on with PyTorch references
        rows.append(Row(name, "ONNX export", "not available", f"{type(error).__name__}: {error}"[:200]))

    if onnx_path is not None:
        from export.fp16 import run_onnx

        log.info("[%s] ORT CPU FP32 reference", name)
        ref = run_onnx(onnx_path, images)
        rows.append(ort_part(name, "ORT CPU FP32 (reference)", onnx_path, "CPUExecutionProvider", ref, images, 1))
    else:
        with torch.no_grad():
            ref = run_batched(lambda b: dict(zip(model.task_names, (o.numpy() for o in model(torch.from_numpy(b))))), images)
        rows.append(Row(name, "reference", "ok", "PyTorch CPU FP32 (no ONNX model)"))

    rows += torch_parts(name, model, images, ref, gpu, repeats)
    if onnx_path is None:
        return rows
    try:
        from export.fp16 import export_fp16

        log.info("[%s] FP16 ONNX", name)
        fp16_path, _ = export_fp16(onnx_path, workdir / "model.fp16.onnx", images=images)
        rows.append(ort_part(name, "ORT CPU FP16 ONNX", fp16_path, "CPUExecutionProvider", ref, images, 1))
    except Exception as error:
        rows.append(Row(name, "FP16 ONNX", "failed", f"{type(error).__name__}: {error}"[:300]))
    rows.append(ort_part(name, "ORT CUDA EP FP32", onnx_path, "CUDAExecutionProvider", ref, images, repeats))
    if fp16_path:
        rows.append(ort_part(name, "ORT CUDA EP FP16 ONNX", fp16_path, "CUDAExecutionProvider", ref, images, repeats))
        rows.append(ort_part(name, "ORT TensorRT EP FP16 ONNX", fp16_path, "TensorrtExecutionProvider", ref, images,
                             repeats, runtime_trt_options(fp16_path, workdir)))
        rows.append(guarded(lambda: tensorrt_part(name, fp16_path, workdir, ref, images, repeats), name, "TensorRT engine"))
    return rows


def guarded(step, name: str, part: str) -> Row:
    try:
        return step()
    except Exception as error:
        log.debug(traceback.format_exc())
        return Row(name, part, "failed", f"{type(error).__name__}: {error}"[:300])


def environment(gpu: bool) -> dict:
    import onnxruntime as ort
    import torch

    env = {"python": platform.python_version(), "machine": platform.machine(), "torch": torch.__version__,
           "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(), "gpu": None}
    if gpu:
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    try:
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
    except ImportError:
        env["tensorrt"] = None
    return env


def format_table(rows: list[Row]) -> str:
    head = f"{'model':8s} {'part':44s} {'status':14s} {'top-1':>6s} {'rel err':>8s} " + \
           " ".join(f"{'b' + str(b) + ' ms':>9s}" for b in BATCHES) + "  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [f"{r.top1:6.1%}" if r.top1 is not None else f"{'':6s}",
                 f"{r.rel_err:8.1e}" if r.rel_err is not None else f"{'':8s}"]
        times = " ".join(f"{r.ms[b]:9.2f}" if b in r.ms else f"{'':9s}" for b in BATCHES)
        lines.append(f"{r.model:8s} {r.part:44s} {r.status:14s} {cells[0]} {cells[1]} {times}  {r.reason}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/gpu_check.json", help="JSON results (default: build/gpu_check.json)")
    parser.add_argument("--models", default="tiny,b16-224",
                        help=f"comma list of {', '.join(MODELS)} (default: tiny,b16-224; l14-336 takes minutes on a CPU)")
    parser.add_argument("--no-gpu", action="store_true", help="act as if there were no GPU (CPU rehearsal)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--vendor", help="directory with pure-Python packages (onnxscript, onnx_ir) to import from")
    parser.add_argument("--verbose", action="store_true", help="also show the ONNX exporter's and optimizer's warnings")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # the exporter's optimizer warns "Skipping constant folding for op Split with multiple outputs" 8 times
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    for ours in ("export", "runtime"):
        logging.getLogger(ours).setLevel(logging.WARNING)
    logging.getLogger("export.onnx_export").setLevel(logging.INFO)  # the export's progress (minutes for L14)
    if args.vendor:
        sys.path.insert(1, str(Path(args.vendor).resolve()))
    import torch

    gpu = torch.cuda.is_available() and not args.no_gpu
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="facecue-gpu-check-") as tmp:
        for name in args.models.split(","):
            workdir = Path(tmp) / name
            workdir.mkdir()
            started = time.perf_counter()
            rows += guarded_model(name, workdir, gpu, args.repeats)
            log.info("[%s] done in %.0f s", name, time.perf_counter() - started)
    env = environment(gpu)
    print(f"\nfacecue GPU check: {env['gpu'] or 'no GPU'}; torch {env['torch']}, onnxruntime {env['onnxruntime']} "
          f"{env['ort_providers']}, TensorRT {env['tensorrt'] or 'not installed'}")
    print(format_table(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"environment": env, "rows": [asdict(r) for r in rows]}, indent=1))
    return 0


def guarded_model(name: str, workdir: Path, gpu: bool, repeats: int) -> list[Row]:
    try:
        return check_model(name, workdir, gpu, repeats)
    except Exception as error:
        traceback.print_exc()
        return [Row(name, "model", "failed", f"{type(error).__name__}: {error}"[:300])]


if __name__ == "__main__":
    sys.exit(main())
