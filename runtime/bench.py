"""Benchmark the pipeline against the naive loop most face-attribute tools use, in one run.

    python -m runtime.bench --source CLIP --model MODEL [--config configs/laptop.yaml] [--seconds S] [--naive-frames N] [--json OUT]

Runs, with the same detector, model and thread budget:
1. the pipeline in fast mode (lossless): frames per second through detection, tracking and results while
   classification runs asynchronously; classifications per second; per-stage and end-to-end latency;
   how long a newly confirmed track waits for its first attributes;
2. the pipeline in real-time mode (the file paced at its frame rate, like a camera): frames dropped;
3. the naive loop: read, detect, then classify every face of every frame synchronously at batch 1;
4. the classifier alone: batched throughput on random crops, and one batch-1 inference time;
then prints a table with the ratios and writes everything as JSON. CPU use is user+system time over
wall time (in cores); peak memory is the process's maximum resident set.
The pipeline runs play the clip in a loop (`source.loop`) for `--seconds` each, so that short clips and
slow models still reach a steady state.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from runtime.backends import open_backend
from runtime.config import Config, load_config
from runtime.crop import crop_face
from runtime.detector import FaceDetector
from runtime.pipeline import Pipeline
from runtime.types import EventKind

log = logging.getLogger("runtime.bench")


class CpuMeter:
    """CPU cores used (user + system time over wall time) between start and stop."""

    def __enter__(self) -> CpuMeter:
        self.started, self.usage = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
        return self

    def __exit__(self, *exc_info) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.wall = time.monotonic() - self.started
        cpu = (usage.ru_utime - self.usage.ru_utime) + (usage.ru_stime - self.usage.ru_stime)
        self.cores = cpu / max(1e-9, self.wall)


def percentiles_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(np.array(values) * 1000.0, [50, 95])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2)}


def run_pipeline(config: Config, mode: str, max_seconds: float | None) -> dict:
    config = replace(config, source=replace(config.source, mode=mode))
    pipeline = Pipeline(config)
    appeared: dict[int, float] = {}
    first_attributes: dict[int, float] = {}
    first_infer: dict[int, float] = {}  # inference time of the batch that carried each track's first reading
    pipeline.on(EventKind.APPEARED, lambda event: appeared.setdefault(event.track_id, event.timestamp))

    def on_frame(result) -> bool:
        now = time.monotonic()
        for item in result.tracks:
            if item.attributes.observations and item.track.id not in first_attributes:
                first_attributes[item.track.id] = now
                first_infer[item.track.id] = result.latencies.get("infer", 0.0)

    with CpuMeter() as cpu:
        pipeline.run(on_frame, max_seconds=max_seconds, wait_for_model=True)
    pipeline.close()
    stats = pipeline.stats()
    warm = pipeline.classifier.warmed_at if pipeline.classifier else None
    # the classifier's first (warm-up) inference is not what a new track waits for in steady state
    tracks = [t for t in first_attributes if t in appeared and warm is not None and appeared[t] >= warm]
    waits = [first_attributes[t] - appeared[t] for t in tracks]
    overheads = [first_attributes[t] - appeared[t] - first_infer[t] for t in tracks]
    busy = pipeline.classifier.busy_seconds if pipeline.classifier else 0.0
    return {
        "mode": mode,
        "frames": stats.frames_processed,
        "frames_read": stats.frames_read,
        "frames_dropped": stats.frames_dropped,
        "dropped_percent": round(100.0 * stats.frames_dropped / max(1, stats.frames_read), 1),
        "fps": round(stats.fps, 2),
        "classifications": stats.classifications,
        "classifications_per_s": round(stats.classifications_per_s, 2),
        "inference_faces_per_busy_s": round(stats.classifications / busy, 2) if busy else None,
        "requests_deferred": stats.requests_deferred,
        "first_attributes_ms": percentiles_ms(waits),  # `appeared` → first attributes seen by the caller
        "first_attributes_beyond_inference_ms": percentiles_ms(overheads),  # the same, less its batch's inference
        "end_to_end_ms": percentiles_ms([]) if stats.end_to_end is None else
        {"p50": round(stats.end_to_end.p50_ms, 2), "p95": round(stats.end_to_end.p95_ms, 2)},
        "stages_ms": {stage: {"p50": round(s.p50_ms, 2), "p95": round(s.p95_ms, 2), "mean": round(s.mean_ms, 2)}
                      for stage, s in stats.stages.items()},
        "cpu_cores": round(cpu.cores, 2),
        "wall_s": round(cpu.wall, 2),
        "table": stats.format(),
    }


def run_naive(config: Config, max_frames: int | None) -> dict:
    """Detect, then classify every face of every frame synchronously at batch 1 (one thread)."""
    backend = open_backend(config.classifier.model, config.classifier)
    size, margin = backend.info.input_size, backend.info.crop_margin
    detector = FaceDetector(config.detector.model, config.detector.min_confidence, config.detector.min_face_size,
                            tiles=config.detector.tiles, tile_budget_ms=config.detector.tile_budget_ms,
                            tile_threads=config.detector.tile_threads)
    video = cv2.VideoCapture(config.source.uri)
    frames = classifications = 0
    latencies = []
    with CpuMeter() as cpu:
        while max_frames is None or frames < max_frames:
            ok, image = video.read()
            if not ok:
                break
            captured = time.monotonic()
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            for detection in detector.detect(rgb, captured):
                backend.run(crop_face(rgb, detection.box, size, margin)[None])
                classifications += 1
                latencies.append(time.monotonic() - captured)  # this face's reading is ready
            frames += 1
    video.release()
    detector.close()
    backend.close()
    return {
        "frames": frames,
        "fps": round(frames / cpu.wall, 2),
        "classifications": classifications,
        "classifications_per_s": round(classifications / cpu.wall, 2),
        "end_to_end_ms": percentiles_ms(latencies),
        "cpu_cores": round(cpu.cores, 2),
        "wall_s": round(cpu.wall, 2),
    }


def run_alone(config: Config, seconds: float = 5.0) -> tuple[dict, str]:
    """The classifier alone: batched throughput (max_batch) and one batch-1 inference; and the model's label."""
    backend = open_backend(config.classifier.model, config.classifier)
    info = backend.info
    label = f"{info.backbone}/{info.adapter} {info.precision}" + (" RANDOM WEIGHTS" if info.random_weights else "")
    size, batch = backend.info.input_size, min(config.classifier.max_batch, backend.max_batch)
    crops = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    backend.run(crops[:1])  # warm-up
    started = time.monotonic()
    backend.run(crops[:1])
    single = time.monotonic() - started
    runs = 0
    with CpuMeter() as cpu:
        while runs == 0 or time.monotonic() - cpu.started < seconds:
            backend.run(crops)
            runs += 1
    backend.close()
    return {"batch": batch, "faces_per_s": round(runs * batch / cpu.wall, 2), "batch1_ms": round(single * 1000.0, 1),
            "batch_ms": round(cpu.wall / runs * 1000.0, 1), "cpu_cores": round(cpu.cores, 2)}, label


def ratio(a, b) -> float | None:
    return round(a / b, 2) if a and b else None


def report(results: dict) -> str:
    fast, live, naive, alone = (results[k] for k in ("pipeline_fast", "pipeline_realtime", "naive", "alone"))
    rows = [
        ("pipeline fast", fast["fps"], "-", fast["classifications_per_s"], fast["end_to_end_ms"], fast["cpu_cores"]),
        ("pipeline realtime", live["fps"], f"{live['frames_dropped']}/{live['frames_read']} ({live['dropped_percent']}%)",
         live["classifications_per_s"], live["end_to_end_ms"], live["cpu_cores"]),
        ("naive batch-1 loop", naive["fps"], "-", naive["classifications_per_s"], naive["end_to_end_ms"], naive["cpu_cores"]),
    ]
    lines = [f"source {results['source']}  model {results['model']} ({results['model_label']})",
             f"{'run':<20}{'fps':>8}{'dropped':>18}{'cls/s':>8}{'e2e p50 ms':>12}{'e2e p95 ms':>12}{'cpu':>6}"]
    for name, fps, dropped, cls, e2e, cores in rows:
        lines.append(f"{name:<20}{fps:>8}{dropped:>18}{cls:>8}{str(e2e['p50']):>12}{str(e2e['p95']):>12}{cores:>6}")
    lines.append(f"classifier alone: {alone['faces_per_s']} faces/s at batch {alone['batch']} "
                 f"({alone['batch_ms']} ms/batch), batch 1 {alone['batch1_ms']} ms")
    r = results["ratios"]
    lines.append(f"ratios: pipeline fps / naive fps = {r['fast_fps_vs_naive']}; in-pipeline inference throughput / "
                 f"alone = {r['inference_in_pipeline_vs_alone']} (fast), {r['inference_in_realtime_pipeline_vs_alone']} "
                 f"(real time); first attributes after `appeared` (real time) "
                 f"p50 {live['first_attributes_ms']['p50']} / p95 {live['first_attributes_ms']['p95']} ms, "
                 f"beyond its batch's inference p50 {live['first_attributes_beyond_inference_ms']['p50']} / "
                 f"p95 {live['first_attributes_beyond_inference_ms']['p95']} ms (batch-1 inference {alone['batch1_ms']} ms)")
    lines.append(f"peak memory {results['peak_memory_mb']} MB")
    lines.append("pipeline fast, per stage:\n" + fast["table"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=(
        "example: facecue bench --source samples/face-demographics-walking-and-pause.mp4 "
        "--model build/model.onnx --seconds 10 --json build/bench.json"))
    parser.add_argument("--source", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", default="laptop", help="a YAML file or a shipped profile name (default: laptop)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--seconds", type=float, default=20.0, help="at most this long per pipeline run")
    parser.add_argument("--naive-frames", type=int, default=60, help="frames for the naive loop (it is slow)")
    parser.add_argument("--json", default="build/bench.json", help="where to write the results")
    parser.add_argument("--verbose", action="store_true", help="also show MediaPipe's and OpenCV's native lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from runtime.quiet import set_verbose

    set_verbose(args.verbose)
    logging.getLogger("runtime.capture").setLevel(logging.ERROR)  # "reopening" at every loop of the clip
    from runtime.run import bad_input_errors  # config, model, backend and source errors: the run command's bad input

    BAD_INPUT = bad_input_errors()
    try:
        return bench(args)
    except BAD_INPUT as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def bench(args: argparse.Namespace) -> int:
    config = load_config(args.config, [f"classifier.model='{args.model}'", f"source.uri='{args.source}'",
                                       "source.loop=true", "source.reopen_initial_delay=0.0", *args.overrides])
    print("classifier alone ...", flush=True)
    alone, model_label = run_alone(config)
    print(f"pipeline, fast mode, {args.seconds:.0f} s ...", flush=True)
    fast = run_pipeline(config, "fast", args.seconds)
    print(f"pipeline, real-time mode, {args.seconds:.0f} s ...", flush=True)
    live = run_pipeline(config, "realtime", args.seconds)
    print(f"naive loop, {args.naive_frames} frames ...", flush=True)
    naive = run_naive(config, args.naive_frames)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "source": args.source, "seconds": args.seconds, "model": args.model, "model_label": model_label,
        "config": args.config, "overrides": args.overrides,
        "alone": alone, "pipeline_fast": fast, "pipeline_realtime": live, "naive": naive,
        "ratios": {
            "fast_fps_vs_naive": ratio(fast["fps"], naive["fps"]),
            "inference_in_pipeline_vs_alone": ratio(fast["inference_faces_per_busy_s"], alone["faces_per_s"]),
            "inference_in_realtime_pipeline_vs_alone": ratio(live["inference_faces_per_busy_s"], alone["faces_per_s"]),
        },
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }
    print(report(results))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.partial")
    temporary.write_text(json.dumps(results, indent=2))
    temporary.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
