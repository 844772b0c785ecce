#!/usr/bin/env python3
"""Soak test (not a unit test): the main job for a given time, watched from outside.

    python scripts/soak.py --minutes 15 [--model build/model.onnx] [--source CLIP] [--json soak.json]

Runs `run_camera.py --source CLIP --model MODEL --headless --set source.loop=true --jsonl ... --max-seconds`
as a subprocess (a looping clip plays like a camera, real-time mode) and samples its resident memory, thread
count and open file descriptors from /proc every `--interval` seconds (Linux; /proc is read directly
rather than with psutil, which is not a project dependency). At the end it reads the JSONL and checks that
every `appeared` has its `disappeared`, and that every processed frame has its frame line. Prints a table and
writes JSON. Without --model it exports a tiny RANDOM-weight model first (export extra: torch), so the
classifier thread runs too. RSS slope: least-squares MB per minute over the samples after `--warmup` seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIP = "samples/face-demographics-walking-and-pause.mp4"
TINY_BACKBONE = REPO / "configs" / "models" / "pe-core-test-tiny.yaml"


def tiny_random_model(directory: Path) -> Path:
    """A tiny PE-Core model with random weights (export.random_checkpoint → build → ONNX)."""
    from export.build import build_model, model_document
    from export.onnx_export import export_onnx
    from export.random_checkpoint import write_random_checkpoint

    weights, adapters = write_random_checkpoint(str(TINY_BACKBONE), directory, rank=4)
    model = build_model(str(TINY_BACKBONE), weights=weights, adapters=adapters)
    return export_onnx(model, directory / "model.onnx", model_document(model, weights=weights, adapters=adapters))


def sample(pid: int) -> dict | None:
    """RSS (MB), threads and open file descriptors of a running process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:
        return None  # exited, not yet reaped
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0, "threads": int(fields["Threads"]), "fds": fds}


def pairing(jsonl: Path) -> dict:
    counts: Counter = Counter()
    frames = 0
    stats: dict = {}
    with open(jsonl, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["type"] == "event":
                counts[(record["event"], record["track_id"])] += 1
            elif record["type"] == "frame":
                frames += 1
            elif record["type"] == "stats":
                stats = record
    appeared = {track for (kind, track) in counts if kind == "appeared"}
    disappeared = {track for (kind, track) in counts if kind == "disappeared"}
    return {"appeared": len(appeared), "disappeared": len(disappeared), "unpaired": len(appeared ^ disappeared),
            "repeated": sum(1 for (kind, _), n in counts.items() if kind in ("appeared", "disappeared") and n > 1),
            "frame_lines": frames, "frames_processed": stats.get("frames_processed"),
            "sink_frames_dropped": stats.get("sink_frames_dropped"), "events_dropped": stats.get("events_dropped"),
            "classifications": stats.get("classifications")}


def slope_mb_per_min(samples: list[dict], warmup: float) -> float | None:
    kept = [s for s in samples if s["t"] >= warmup]
    if len(kept) < 3:
        return None
    minutes = np.array([s["t"] for s in kept]) / 60.0
    return float(np.polyfit(minutes, np.array([s["rss_mb"] for s in kept]), 1)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--source", default=CLIP)
    parser.add_argument("--model", help="facecue ONNX model (default: a tiny random-weight one, made here)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds left out of the RSS slope")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="passed on to run_camera.py")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="facecue-soak-") as temporary:
        directory = Path(temporary)
        model = args.model or str(tiny_random_model(directory))
        jsonl = directory / "soak.jsonl"
        command = [sys.executable, "run_camera.py", "--source", args.source, "--model", model, "--headless",
                   "--set", "source.loop=true", "--jsonl", str(jsonl), "--max-seconds", str(args.minutes * 60.0),
                   "--log-level", "WARNING"] + [item for o in args.overrides for item in ("--set", o)]
        started = time.monotonic()
        with open(directory / "stderr.txt", "w") as stderr:
            process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
            samples = []
            try:
                while process.poll() is None:
                    time.sleep(args.interval)
                    if (point := sample(process.pid)) is not None:
                        samples.append({"t": round(time.monotonic() - started, 1), **point})
                        print(f"{point['rss_mb']:8.1f} MB {point['threads']:4d} threads {point['fds']:4d} fds "
                              f"at {samples[-1]['t']:.0f} s", file=sys.stderr)
                stdout, _ = process.communicate(timeout=120)
            except KeyboardInterrupt:
                process.terminate()  # the job stops cleanly on SIGTERM and still finalises its JSONL
                stdout, _ = process.communicate(timeout=120)
        errors = (directory / "stderr.txt").read_text()
        result = {
            "command": " ".join(["python", "scripts/soak.py"] + (argv if argv is not None else sys.argv[1:])),
            "job": " ".join(command[1:]), "exit_status": process.returncode,
            "wall_s": round(time.monotonic() - started, 1), "samples": len(samples),
            "rss_mb_first": samples[0]["rss_mb"] if samples else None,
            "rss_mb_last": samples[-1]["rss_mb"] if samples else None,
            "rss_mb_max": max((s["rss_mb"] for s in samples), default=None),
            "rss_slope_mb_per_min": slope_mb_per_min(samples, args.warmup),
            "threads": sorted({s["threads"] for s in samples}), "fds": sorted({s["fds"] for s in samples}),
            "tracebacks": errors.count("Traceback"),
            **(pairing(jsonl) if jsonl.exists() else {"jsonl": "missing"}),
            "statistics": stdout.strip().splitlines()[-12:],
        }
    rows = [("exit status", result["exit_status"]), ("wall s", result["wall_s"]),
            ("RSS MB first / last / max", f"{result['rss_mb_first']:.1f} / {result['rss_mb_last']:.1f} / "
                                          f"{result['rss_mb_max']:.1f}" if samples else "-"),
            ("RSS slope MB/min", "-" if result["rss_slope_mb_per_min"] is None else f"{result['rss_slope_mb_per_min']:.3f}"),
            ("threads (seen)", result["threads"]), ("open fds (seen)", result["fds"]),
            ("appeared / disappeared / unpaired", f"{result.get('appeared')} / {result.get('disappeared')} / "
                                                  f"{result.get('unpaired')}"),
            ("frames processed / frame lines", f"{result.get('frames_processed')} / {result.get('frame_lines')}"),
            ("sink frames dropped, events dropped", f"{result.get('sink_frames_dropped')}, {result.get('events_dropped')}"),
            ("classifications", result.get("classifications")), ("tracebacks in stderr", result["tracebacks"])]
    for name, value in rows:
        print(f"{name:<38}{value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    healthy = result["exit_status"] == 0 and result.get("unpaired") == 0 and result["tracebacks"] == 0
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
