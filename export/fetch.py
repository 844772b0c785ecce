"""`facecue fetch thesis-dora | thesis-mtlora [--out DIR] [--fp16]`: the real thesis model in one command.

1. PE-Core-L14-336 from Hugging Face through huggingface_hub (its cache, HF_ENDPOINT and HF_HUB_OFFLINE work as
   everywhere else);
2. the thesis checkpoint files, Git LFS objects of the pinned commit (export/pins.py), each checked against its
   pinned sha256 and size, resumable (export/download.py);
3. export to ONNX and verification against PyTorch (the same code as `python -m export` and `export.verify`) on
   face crops cut from the bundled sample clips (in memory, nothing written) plus random images;
4. `--fp16`: the FP16 model too (export.fp16, verified against FP32); `--int8`: the INT8 (QDQ) model too
   (calibration int8, calibrated on face crops from the bundled clips, its agreement report printed);
5. `DIR/facecue-fetch.json`, written last and atomically: a second call with everything in place only says so.

Then it prints the `facecue run` command. Base URLs: `--lfs-url` (default GitHub's LFS media host, or
FACECUE_LFS_URL) for mirrors; Hugging Face's endpoint is HF_ENDPOINT. Every failure is one line and exit 2;
nothing incomplete is left under a final name.

    facecue fetch thesis-dora --out models/thesis-dora
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

import numpy as np

from export.download import DownloadError, PinnedFile, download, is_complete, sha256_of
from export import pins

log = logging.getLogger(__name__)
DEFAULT_LFS_URL = "https://media.githubusercontent.com/media"
MANIFEST = "facecue-fetch.json"
SHA256 = re.compile(r"[0-9a-f]{64}")
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def lfs_url(base: str, repo: str, commit: str, path: str) -> str:
    return f"{base.rstrip('/')}/{repo}/{commit}/{path}"


def fetch_weights(release: pins.Release) -> tuple[Path, str]:
    """PE-Core through huggingface_hub, and its sha256; huggingface_hub's errors become one DownloadError line."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DownloadError('facecue fetch needs huggingface_hub (pip install "facecue[export]")') from None
    try:
        weights = Path(hf_hub_download(release.weights_repo, release.weights_file, revision=release.weights_revision))
    except Exception as error:  # huggingface_hub raises many types (offline, 404, HTTP, connection)
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        hint = ("HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache" if offline else
                "check the network, HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only")
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DownloadError(f"PE-Core weights {release.weights_repo}/{release.weights_file}: {reason} ({hint})") from None
    return weights, check_hub_sha256(weights)


def check_hub_sha256(weights: Path) -> str:
    """The PE-Core file's sha256, checked against the one the Hub gave for it; a corrupt cached copy is removed.

    huggingface_hub checks only the size. The Hub's etag of a Git LFS file (header X-Linked-Etag) is the
    file's sha256, and the cache stores the file as `blobs/<etag>`; so the blob's name is what its content
    must hash to. (Meta publishes no sha256 of its own to pin here.)
    """
    blob = weights.resolve()
    actual = sha256_of(blob)
    if SHA256.fullmatch(blob.name) and actual != blob.name:  # else not an LFS file: a git sha1, nothing to compare
        blob.unlink(missing_ok=True)
        weights.unlink(missing_ok=True)
        raise DownloadError(f"PE-Core weights {weights.name}: sha256 {actual[:12]}… does not match the Hub's "
                            f"{blob.name[:12]}…; the corrupt copy was removed from the Hugging Face cache, run again")
    return actual


def sample_faces(size: int, margin: float, limit: int = 16, every: int = 8) -> np.ndarray:
    """Face crops from the bundled sample clips at the model's size (empty when the clips are not here)."""
    import cv2

    from runtime.detector import FaceDetector
    from runtime.faces import largest_face_crop

    crops = []
    with FaceDetector("full_range", running_mode="image") as detector:
        for clip in sorted(SAMPLES.glob("*.mp4")):
            video = cv2.VideoCapture(str(clip))
            index = 0
            while len(crops) < limit:
                ok, frame = video.read()
                if not ok:
                    break
                if index % every == 0:
                    crop = largest_face_crop(detector, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), size, margin)
                    if crop is not None:
                        crops.append(crop)
                index += 1
            video.release()
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)


def export_and_verify(release: pins.Release, weights: Path, adapters: Path, out: Path) -> dict:
    """model.onnx in `out` (written under a temporary name, renamed once verified); returns the verification."""
    from export.build import build_model, model_document
    from export.onnx_export import export_onnx
    from export.verify import verify

    model = build_model(release.backbone, weights=weights, adapters=adapters)
    document = model_document(model, weights=weights, adapters=adapters)
    temporary = out / ".model.onnx.partial"
    log.info("exporting to ONNX (a minute or two for L14-336 on a laptop CPU)")
    export_onnx(model, temporary, document)
    faces = sample_faces(model.config.image_size, 0.0)
    random = np.random.default_rng(0).integers(0, 256, (4, model.config.image_size, model.config.image_size, 3), np.uint8)
    images = np.concatenate([faces, random])
    log.info("verifying ONNX Runtime against PyTorch on %d face crops and %d random images", len(faces), len(random))
    results = verify(temporary, model, images)
    failed = [r.task for r in results if not r.passes(1e-3)]
    if failed:
        temporary.unlink()
        raise DownloadError(f"the exported model disagrees with PyTorch on {failed}: not kept")
    final = out / "model.onnx"
    os.replace(temporary, final)
    os.chmod(final, 0o644)
    return {"faces": len(faces), "random": len(random),
            "tasks": {r.task: {"relative_error": r.relative_error, "top1_agreement": r.top1_agreement} for r in results}}


def make_int8(model: Path) -> Path:
    """model.int8.onnx next to `model` (calibration/int8_model.py) on face crops from the bundled clips."""
    from calibration.config import load_config as load_calibration_config
    from calibration.int8_model import make_int8_model
    from runtime.metadata import read_model_info

    info = read_model_info(model)
    crops = sample_faces(info.input_size, info.crop_margin, limit=200, every=1)
    settings = load_calibration_config(None).int8
    out = model.with_name("model.int8.onnx")
    report = make_int8_model(model, out, crops, settings)
    print(report.table())
    return out


def fetch(name: str, out: Path, lfs_base: str, fp16: bool = False, int8: bool = False) -> Path:
    """Everything for release `name` in `out`; returns the model to run. Raises DownloadError."""
    releases, _, _, _ = pins.load()
    release = releases[name]
    manifest_path = out / MANIFEST
    adapters = out / "checkpoint"
    local = {pin.path: adapters / Path(pin.path).name for pin in release.files}
    if manifest_path.is_file() and (out / "model.onnx").is_file() and (not fp16 or (out / "model.fp16.onnx").is_file()) \
            and (not int8 or (out / "model.int8.onnx").is_file()) and all(is_complete(local[pin.path], pin) for pin in release.files):
        print(f"{name}: everything is in place in {out} (delete {manifest_path} to fetch again)")
        return out / ("model.fp16.onnx" if fp16 else "model.onnx")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create {out}: {error.strerror}") from None
    weights, weights_sha256 = fetch_weights(release)
    for pin in release.files:
        download(lfs_url(lfs_base, release.github_repo, release.commit, pin.path), local[pin.path], pin)
    try:
        verification = export_and_verify(release, weights, adapters, out)
        model = out / "model.onnx"
        if fp16:
            from export.fp16 import export_fp16

            model, _ = export_fp16(out / "model.onnx")
        if int8:
            make_int8(out / "model.onnx")
    except OSError as error:
        raise DownloadError(f"cannot write the model in {out}: {error.strerror or error}") from None
    manifest = {"release": name, "weights": {"repo": release.weights_repo, "file": release.weights_file,
                                             "path": str(weights), "sha256": weights_sha256},
                "checkpoint": {"repo": release.github_repo, "commit": release.commit,
                               "files": [{"path": p.path, "sha256": p.sha256, "size": p.size} for p in release.files]},
                "model": str(model), "verification": verification}
    temporary = manifest_path.with_name(MANIFEST + ".partial")
    temporary.write_text(json.dumps(manifest, indent=2))
    os.replace(temporary, manifest_path)
    return model


def main(argv=None) -> int:
    releases, _, _, _ = pins.load()
    parser = argparse.ArgumentParser(prog="facecue fetch", description=__doc__.split("\n\n")[0],
                                     epilog="example: facecue fetch thesis-dora --out models/thesis-dora")
    parser.add_argument("release", choices=sorted(releases), help="which published checkpoint")
    parser.add_argument("--out", type=Path, help="folder for the files and the model (default models/<release>)")
    parser.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (for GPUs), verified against FP32")
    parser.add_argument("--int8", action="store_true",
                        help="also write model.int8.onnx (QDQ, for CPUs), calibrated on faces from the bundled clips")
    parser.add_argument("--lfs-url", default=os.environ.get("FACECUE_LFS_URL", DEFAULT_LFS_URL),
                        help="base URL of the Git LFS media host (a mirror); default GitHub's")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "httpx2", "httpcore", "huggingface_hub", "filelock"):  # one line per HTTP request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = args.out or Path("models") / args.release
    from calibration.errors import CalibrationError
    from export.errors import CheckpointError

    try:
        model = fetch(args.release, out, args.lfs_url, args.fp16, args.int8)
    except (DownloadError, CheckpointError, CalibrationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    print(f"ready: facecue run --source 0 --model {model}\n"
          f"check it reproduces the thesis: facecue check-thesis {model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
