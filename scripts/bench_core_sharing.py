#!/usr/bin/env python3
"""How the OpenVINO classifier's inference time suffers when the face detector shares its cores.

    python scripts/bench_core_sharing.py --model build/l14.int8.onnx [--rounds 3 --seconds 20 --json out.json]

In the live pipeline the classifier's threads (every core by default) run beside the perception thread, whose
MediaPipe detector takes a few ms of every frame. Each variant opens the model with the runtime's own
OpenVINO backend (runtime/backends/openvino.py, `classifier.openvino_properties` set per variant), runs the
real detector on a bundled clip at the clip's frame rate in a second thread, and times batch-1 inferences with
a pause between them, as between classifications of new faces. Every variant runs in its own process, the
variants interleaved within a round and the rounds repeated (this machine is shared and noisy). Prints a table
of p50 / p95 inference ms per variant (median over rounds, each round in brackets) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "samples" / "face-demographics-walking.mp4"
# name → (OpenVINO properties over the backend's own, run the detector beside it)
VARIANTS = {
    "alone": ({}, False),
    "pinned, static (OpenVINO's default)": ({"ENABLE_CPU_PINNING": "YES", "TBB_PARTITIONER": "STATIC"}, True),
    "unpinned, static": ({"ENABLE_CPU_PINNING": "NO", "TBB_PARTITIONER": "STATIC"}, True),
    "pinned, auto": ({"ENABLE_CPU_PINNING": "YES", "TBB_PARTITIONER": "AUTO"}, True),
    "unpinned, auto (the backend's)": ({}, True),
}


def clip_frames() -> tuple[list[np.ndarray], float]:
    import cv2

    capture = cv2.VideoCapture(str(CLIP))
    fps = capture.get(cv2.CAP_PROP_FPS) or 12.0
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return frames, fps


def worker(model: str, variant: str, seconds: float, pause: float) -> dict:
    """One variant in this process: inference times (s) of batch-1 runs, with the detector beside it or not."""
    from runtime.backends import open_backend
    from runtime.config import ClassifierConfig
    from runtime.detector import FaceDetector

    properties, with_detector = VARIANTS[variant]
    backend = open_backend(model, ClassifierConfig(backend="openvino", openvino_cache_dir="",
                                                   openvino_properties=properties))
    size = backend.info.input_size
    crop = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    backend.run(crop)  # warm-up
    stop = threading.Event()

    def detect() -> None:
        frames, fps = clip_frames()
        detector = FaceDetector()
        start, index = time.monotonic(), 0
        while not stop.is_set():
            detector.detect(frames[index % len(frames)], timestamp=index / fps)
            index += 1
            stop.wait(max(0.0, start + index / fps - time.monotonic()))

    if with_detector:
        threading.Thread(target=detect, daemon=True).start()
        time.sleep(1.0)  # the detector's own start-up is not what an inference competes with
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        backend.run(crop)
        times.append(time.monotonic() - started)
        time.sleep(pause)
    stop.set()
    pinning = backend.compiled.get_property("ENABLE_CPU_PINNING")
    return {"variant": variant, "times_s": times, "pinning": bool(pinning),
            "threads": backend.threads, "precision": backend.precision}


def percentiles_ms(times: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(np.array(times) * 1000.0, [50, 95])
    return round(float(p50), 1), round(float(p95), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a facecue ONNX model (FP32 or INT8 QDQ)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per variant and round")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between inferences")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not Path(args.model).is_file():
        print(f"bench_core_sharing: model not found: {args.model}", file=sys.stderr)
        return 2
    if args.worker:
        print(json.dumps(worker(args.model, args.worker, args.seconds, args.pause)))
        return 0
    rounds: dict[str, list[dict]] = {variant: [] for variant in args.variants}
    for index in range(args.rounds):
        for variant in args.variants:
            done = subprocess.run([sys.executable, __file__, "--model", args.model, "--worker", variant,
                                   "--seconds", str(args.seconds), "--pause", str(args.pause)],
                                  capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                print(f"bench_core_sharing: {variant!r} failed: {done.stderr.strip().splitlines()[-1:]}",
                      file=sys.stderr)
                return 1
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["p50_ms"], result["p95_ms"] = percentiles_ms(result["times_s"])
            rounds[variant].append(result)
            print(f"round {index + 1}: {variant}: p50 {result['p50_ms']} / p95 {result['p95_ms']} ms "
                  f"({len(result['times_s'])} runs)", flush=True)
    print(f"\n{Path(args.model).name}, {rounds[args.variants[0]][0]['threads']} threads, "
          f"{rounds[args.variants[0]][0]['precision']}; batch 1, {args.pause} s between inferences")
    print(f"{'variant':40s} {'p50 ms (rounds)':32s} p95 ms (rounds)")
    summary = {}
    for variant, results in rounds.items():
        p50s, p95s = [r["p50_ms"] for r in results], [r["p95_ms"] for r in results]
        summary[variant] = {"p50_ms": float(np.median(p50s)), "p95_ms": float(np.median(p95s)),
                            "rounds": [{k: r[k] for k in ("p50_ms", "p95_ms", "pinning")} for r in results]}
        print(f"{variant:40s} {np.median(p50s):7.1f} ({'/'.join(f'{v:.0f}' for v in p50s)})".ljust(73)
              + f" {np.median(p95s):7.1f} ({'/'.join(f'{v:.0f}' for v in p95s)})")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "seconds": args.seconds, "pause": args.pause,
                                               "variants": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
