"""`facecue check-thesis MODEL.onnx`: does this installation compute what the thesis computed?

Downloads the thesis demo images and the label files its demo wrote for them (export/pins.py: same repository
and commit as the checkpoints; the images are film stills, so they are fetched at run time into a temporary
folder and never kept), cuts each face exactly as the thesis demo did — the published enclosing square
`x,y,w,h`, zero fill outside the image, PIL's bilinear resize to the model's size — runs the model (ONNX
Runtime, batch 1, plain softmax of the logits: the thesis applied no temperature), and prints, face by face,
the published top-2 labels and probabilities next to the model's.

Exit 0 when every face's top-1 label matches for every task and every published top-2 probability is within
`--tolerance` (default 0.02 absolute: the label files round to 4 decimals, and the thesis ran PyTorch in FP32 on
a GPU; an FP16 or INT8 model needs a wider tolerance). Exit 1 on a mismatch, 2 for bad input or a failed download.

    facecue check-thesis models/thesis-dora/model.onnx
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import pins
from export.download import DownloadError, PinnedFile, download

DEFAULT_RAW_URL = "https://raw.githubusercontent.com"
TASKS = ("age", "gender", "emotion")  # the order of the label files' fields


@dataclass(frozen=True)
class PublishedFace:
    top2: dict[str, tuple[tuple[str, float], tuple[str, float]]]  # task → ((label, p), (label, p))
    square: tuple[int, int, int, int]  # x, y, w, h (may be negative)


def parse_labels(text: str) -> list[PublishedFace]:
    """The thesis demo's label file: per face `top1;p1;top2;p2` for age, gender, emotion, then `x,y,w,h`."""
    faces = []
    for number, line in enumerate(text.strip().splitlines(), 1):
        fields = line.strip().split(";")
        if len(fields) != 13:
            raise ValueError(f"line {number}: expected 13 ';'-separated fields, got {len(fields)}")
        top2 = {}
        for i, task in enumerate(TASKS):
            a, pa, b, pb = fields[4 * i:4 * i + 4]
            top2[task] = ((a, float(pa)), (b, float(pb)))
        square = tuple(int(v) for v in fields[12].split(","))
        if len(square) != 4:
            raise ValueError(f"line {number}: the box {fields[12]!r} is not x,y,w,h")
        faces.append(PublishedFace(top2, square))
    return faces


def thesis_crop(rgb: np.ndarray, square: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The demo's crop: the square, black outside the image, then PIL's bilinear resize to size×size."""
    from PIL import Image

    x, y, w, h = square
    canvas = np.zeros((h, w, 3), np.uint8)
    top, left = max(0, y), max(0, x)
    bottom, right = min(rgb.shape[0], y + h), min(rgb.shape[1], x + w)
    if bottom > top and right > left:
        canvas[top - y:bottom - y, left - x:right - x] = rgb[top:bottom, left:right]
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.BILINEAR))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def check(model_path: Path, folder: Path, demo: tuple[pins.DemoImage, ...], tolerance: float) -> tuple[bool, list[str]]:
    """Compare the model with the published label files in `folder`; returns (pass, report lines)."""
    import cv2
    import onnxruntime as ort

    from runtime.metadata import read_model_info

    info = read_model_info(model_path)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    labels = {task.name: task.labels for task in info.tasks}
    missing = [t for t in TASKS if t not in labels]
    if missing:
        raise ValueError(f"{model_path} has no {missing} head: the thesis model has age, gender and emotion")
    lines, ok = [], True
    for item in demo:
        image = cv2.imread(str(folder / Path(item.image).name), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{item.image}: not a readable image")
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        published = parse_labels((folder / Path(item.labels).name).read_text(encoding="utf-8"))
        for index, face in enumerate(published):
            crop = thesis_crop(rgb, face.square, info.input_size)[None]
            outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {info.input_name: crop})))
            for task in TASKS:
                probs = softmax(outputs[task][0])
                order = np.argsort(probs)[::-1][:2]
                mine = [(labels[task][i], float(probs[i])) for i in order]
                same = mine[0][0] == face.top2[task][0][0]
                close = all(abs(float(probs[labels[task].index(name)]) - p) <= tolerance
                            for name, p in face.top2[task] if name in labels[task])
                ok &= same and close
                mark = "ok" if same and close else ("PROBABILITY" if same else "TOP-1 DIFFERS")
                lines.append(f"{Path(item.image).name:14} face {index}  {task:8} thesis {_pair(face.top2[task])}   "
                             f"this model {_pair(mine)}   {mark}")
    return ok, lines


def _pair(top2) -> str:
    return ", ".join(f"{label} {p:.4f}" for label, p in top2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="facecue check-thesis", description=__doc__.split("\n\n")[0],
                                     epilog="example: facecue check-thesis models/thesis-dora/model.onnx")
    parser.add_argument("model", type=Path, help="a facecue ONNX model of the thesis DoRA checkpoint")
    parser.add_argument("--tolerance", type=float, default=0.02, help="absolute probability tolerance (default 0.02)")
    parser.add_argument("--raw-url", default=os.environ.get("FACECUE_RAW_URL", DEFAULT_RAW_URL),
                        help="base URL for the repository's ordinary files (a mirror); default GitHub's raw host")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return 2
    _, demo, repo, commit = pins.load()
    try:
        with tempfile.TemporaryDirectory(prefix="facecue-thesis-demo-") as folder:
            for item in demo:
                for path in (item.image, item.labels):
                    url = f"{args.raw_url.rstrip('/')}/{repo}/{commit}/{path}"
                    download(url, Path(folder) / Path(path).name, PinnedFile(path, None, None), progress=False)
            ok, lines = check(args.model, Path(folder), demo, args.tolerance)
    except (DownloadError, ValueError, OSError) as error:  # ModelMetadataError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print("\n".join(lines))
    print("PASS: every top-1 matches the thesis and every probability is within "
          f"{args.tolerance}" if ok else "FAIL: this model does not reproduce the thesis' predictions (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
