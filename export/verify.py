"""`python -m export.verify MODEL.onnx --backbone … (--adapters DIR | --heads FILE) [--weights FILE]
(--images DIR | --crops DIR)`: ONNX Runtime vs the PyTorch pipeline on faces and random images.

Per task: max |ONNX − ref|, that error relative to scale (÷ max(1, max |ref|)), and top-1 agreement
counted where the reference's top-2 margin exceeds the tolerance (closer calls may flip in rounding).
Exit 1 when a task is outside tolerance.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # first: without the export extra, one line instead of an import traceback
    from facecue.cli import run_module

    sys.exit(run_module("export.verify", "python -m export.verify", "export"))

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.build import build_model
from export.cli import add_model_inputs, run_main, setup_logging
from export.errors import CheckpointError
from facecue.progress import Progress
from runtime.faces import add_face_arguments
from runtime.metadata import read_model_info

log = logging.getLogger(__name__)
DEFAULT_TOLERANCE = 1e-3


@dataclass
class TaskAgreement:
    task: str
    max_abs_error: float
    relative_error: float
    top1_agreement: float  # over decisive samples
    decisive: int          # samples whose reference top-2 margin exceeds the tolerance
    samples: int

    def passes(self, tolerance: float) -> bool:
        return self.relative_error <= tolerance and self.top1_agreement == 1.0


def compare(got: np.ndarray, ref: np.ndarray, task: str, tolerance: float) -> TaskAgreement:
    top2 = np.sort(ref, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > tolerance
    same = got.argmax(1) == ref.argmax(1)
    return TaskAgreement(task, float(np.abs(got - ref).max()), float(np.abs(got - ref).max() / max(1.0, np.abs(ref).max())),
                         float(same[decisive].mean()) if decisive.any() else 1.0, int(decisive.sum()), len(ref))


def run_both(session: ort.InferenceSession, model: torch.nn.Module, images: np.ndarray, batch: int = 16):
    """Both pipelines' logits per task, batch by batch."""
    names = [o.name for o in session.get_outputs()]
    got = {n: [] for n in names}
    ref = {n: [] for n in model.task_names}
    with Progress("verifying ONNX Runtime against PyTorch", log, total=len(images), unit="images") as bar:
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            for name, value in zip(names, session.run(None, {"images": chunk})):
                got[name].append(value)
            with torch.no_grad():
                for name, value in zip(model.task_names, model(torch.from_numpy(chunk))):
                    ref[name].append(value.numpy())
            bar.update(len(chunk))
    return {n: np.concatenate(v) for n, v in got.items()}, {n: np.concatenate(v) for n, v in ref.items()}


def verify(onnx_path: str | Path, model, images: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> list[TaskAgreement]:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got, ref = run_both(session, model.eval(), images)
    if list(got) != list(ref):
        raise CheckpointError(f"{onnx_path} has outputs {list(got)} but the checkpoint gives tasks {list(ref)}")
    return [compare(got[task], ref[task], task, tolerance) for task in ref]


def load_faces(images_dir, crops_dir, size: int, margin: float) -> np.ndarray:
    from runtime.faces import load_face_crops  # the runtime's detector and crop function

    return load_face_crops(images_dir=images_dir, crops_dir=crops_dir, size=size, margin=margin).crops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.verify", description=__doc__, epilog=(
        "example: facecue verify build/model.onnx --backbone pe-core-t16-384 --weights build/random/RANDOM-PE-Core-T16-384.pt "
        "--adapters build/random/RANDOM-T16-384-dora-adapters --crops DIR_OF_FACE_CHIPS"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the exported ONNX model")
    add_model_inputs(parser)
    add_face_arguments(parser, required=True)
    parser.add_argument("--random", type=int, default=8, help="random images added to the faces (default 8)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    setup_logging()
    info = read_model_info(args.model)
    model = build_model(args.backbone, weights=args.weights, adapters=args.adapters, heads=args.heads)
    if model.config.image_size != info.input_size:
        raise CheckpointError(f"{args.model} takes {info.input_size}px but {args.backbone} is {model.config.image_size}px")
    face_images = load_faces(args.images, args.crops, info.input_size, info.crop_margin)
    random_images = np.random.default_rng(0).integers(0, 256, (args.random, info.input_size, info.input_size, 3),
                                                      dtype=np.uint8)
    results = {"faces": verify(args.model, model, face_images, args.tolerance),
               "random": verify(args.model, model, random_images, args.tolerance)}
    print(f"{'set':7} {'task':8} {'max abs err':>12} {'rel err':>10} {'top-1 agree':>12} {'decisive':>9}")
    for name, rows in results.items():
        for r in rows:
            print(f"{name:7} {r.task:8} {r.max_abs_error:12.3e} {r.relative_error:10.3e} {r.top1_agreement:12.1%} "
                  f"{r.decisive:>4}/{r.samples:<4}")
    ok = all(r.passes(args.tolerance) for rows in results.values() for r in rows)
    if args.json:
        Path(args.json).write_text(json.dumps({k: [asdict(r) for r in v] for k, v in results.items()} | {"pass": ok}))
    print("PASS" if ok else f"FAIL: outside tolerance (relative error ≤ {args.tolerance}, top-1 agreement 100%)")
    return 0 if ok else 1

