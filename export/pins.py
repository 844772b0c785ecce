"""The published files `facecue fetch` and `facecue check-thesis` download, pinned by commit, sha256 and size.

- PE-Core-L14-336: Meta's file on Hugging Face (`facebook/PE-Core-L14-336`, `PE-Core-L14-336.pt`; what
  Meta's perception_models loader fetches with `huggingface_hub.hf_hub_download`).
- The thesis checkpoints: Git LFS objects in the GitHub repository `Antuke/PE_PEFT_FT` at commit 979f918
  ("Track mtl_dora_ckpt and mtl_mtlora_ckpt with LFS"), folder `checkpoints/`; sha256 and sizes are those of
  the LFS pointers in that commit.
- The thesis demo images and the label files its demo wrote for them (`demo_images/`,
  `predicted/annotated/labels/`), ordinary Git files of the same commit, made with `mtl_dora_ckpt`.

Tests replace these pins with their own (environment variable FACECUE_PINS_FILE, a JSON file of the same
shape as `as_dict()`); users never need it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from export.download import PinnedFile


@dataclass(frozen=True)
class Release:
    backbone: str  # configs/models/<backbone>.yaml
    weights_repo: str  # Hugging Face model repository of the PE-Core weights
    weights_file: str
    weights_revision: str
    github_repo: str  # owner/name of the thesis repository
    commit: str
    files: tuple[PinnedFile, ...]  # the adapter folder's files (paths inside the repository)


@dataclass(frozen=True)
class DemoImage:
    image: str  # path in the repository
    labels: str  # the demo's published label file for it


GITHUB_REPO, COMMIT = "Antuke/PE_PEFT_FT", "979f918"
PE_CORE = dict(backbone="pe-core-l14-336", weights_repo="facebook/PE-Core-L14-336", weights_file="PE-Core-L14-336.pt",
               weights_revision="main", github_repo=GITHUB_REPO, commit=COMMIT)

RELEASES: dict[str, Release] = {
    "thesis-dora": Release(**PE_CORE, files=(
        PinnedFile("checkpoints/mtl_dora_ckpt/adapter_model.safetensors",
                   "af46964f01c655fccbb04e2449b6976e3c1b6f7588d3e1d54fa0194b6a7cff0d", 104_759_784),
        PinnedFile("checkpoints/mtl_dora_ckpt/adapter_config.json",
                   "67b1676aebc6730f975339407a106da6123bea5c8b2c06d3cd11f2b14219c369", 950),
        PinnedFile("checkpoints/mtl_dora_ckpt/custom_layers.pt",
                   "1e6cd9efaf613ca1ee0b106727fbeb1bfad9b46cc1271d37f362c3751ea9070e", 12_727_231),
    )),
    "thesis-mtlora": Release(**PE_CORE, files=(
        PinnedFile("checkpoints/mtl_mtlora_ckpt/adapter_model.safetensors",
                   "2c497f57d040f90ee0e7bb06d03c7b6786ccdf5ba78742eed061541b7b0d41d5", 97_355_480),
        PinnedFile("checkpoints/mtl_mtlora_ckpt/adapter_config.json",
                   "5d6c34ef0802901f7586e67973301637ac91af87a78cfcdf7f52c27089ed8394", 950),
        PinnedFile("checkpoints/mtl_mtlora_ckpt/custom_layers.pt",
                   "b296998f53262d97a653acfe77d6755cf2f79f974052539b5fc2642f592c2691", 151_294_138),
    )),
}
DEMO_IMAGES: tuple[DemoImage, ...] = tuple(
    DemoImage(f"demo_images/{name}", f"predicted/annotated/labels/{name.rsplit('.', 1)[0]}.txt")
    for name in ("godfather.jpg", "mother.png", "shining.png"))


def as_dict() -> dict:
    return {"releases": {k: asdict(v) for k, v in RELEASES.items()}, "github_repo": GITHUB_REPO, "commit": COMMIT,
            "demo_images": [asdict(d) for d in DEMO_IMAGES]}


def load() -> tuple[dict[str, Release], tuple[DemoImage, ...], str, str]:
    """(releases, demo images, repository, commit): the pins above, or FACECUE_PINS_FILE's (tests)."""
    path = os.environ.get("FACECUE_PINS_FILE")
    if not path:
        return RELEASES, DEMO_IMAGES, GITHUB_REPO, COMMIT
    data = json.loads(open(path, encoding="utf-8").read())
    releases = {name: Release(**{**r, "files": tuple(PinnedFile(**f) for f in r["files"])})
                for name, r in data["releases"].items()}
    return releases, tuple(DemoImage(**d) for d in data["demo_images"]), data["github_repo"], data["commit"]
