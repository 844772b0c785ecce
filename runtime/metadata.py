"""The `facecue` metadata document: the one contract between export, calibration and the runtime.

An ONNX model carries it as the JSON value of `metadata_props["facecue"]`; a TensorRT engine carries
the same document in `<engine>.json` (plus a `tensorrt` entry). Later stages add fields and never
drop any, so `ModelInfo.document` keeps the whole parsed document for writing back.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_KEY = "facecue"
FORMAT_VERSION = 1

# Label orders of the thesis. Tasks are named in lower case in the ONNX model.
THESIS_LABELS: dict[str, list[str]] = {
    "age": ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"],
    "gender": ["Male", "Female"],
    "emotion": ["Surprise", "Fear", "Disgust", "Happy", "Sad", "Angry", "Neutral"],
}
TASK_ORDER = ("age", "gender", "emotion")


class ModelMetadataError(ValueError):
    """The model file is not a facecue model, or its metadata cannot be used."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: tuple[str, ...]
    temperature: float = 1.0


@dataclass(frozen=True)
class ModelInfo:
    tasks: tuple[TaskSpec, ...]
    input_name: str
    input_size: int
    crop_margin: float
    backbone: str
    adapter: str
    precision: str
    random_weights: bool  # made from random weights: never present its outputs as real cues
    document: dict[str, Any] = field(repr=False, compare=False)

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)


def build_document(
    tasks: list[str],
    input_size: int,
    backbone: str,
    adapter: str,
    precision: str = "fp32",
    crop_margin: float = 0.0,
    source: dict[str, Any] | None = None,
    random_weights: bool = False,
) -> dict[str, Any]:
    """A fresh document as design.md shows it, for the tasks the model has (thesis label orders)."""
    unknown = [name for name in tasks if name not in THESIS_LABELS]
    if unknown:
        raise ModelMetadataError(f"unknown task(s) {unknown}; known: {list(THESIS_LABELS)}")
    return {
        "format_version": FORMAT_VERSION,
        "tasks": [{"name": name, "labels": list(THESIS_LABELS[name]), "temperature": 1.0} for name in tasks],
        "input": {"name": "images", "size": int(input_size), "layout": "NHWC", "dtype": "uint8", "color": "RGB"},
        "crop": {"rule": "square", "margin": float(crop_margin)},
        "backbone": backbone,
        "adapter": adapter,
        "precision": precision,
        "random_weights": bool(random_weights),
        "source": source or {},
    }


def parse_document(document: dict[str, Any] | str, origin: str = "model") -> ModelInfo:
    """Check a document and turn it into a ModelInfo; errors say what is wrong and where."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as error:
            raise ModelMetadataError(f"{origin}: the '{METADATA_KEY}' metadata is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise ModelMetadataError(f"{origin}: the '{METADATA_KEY}' metadata is not a JSON object")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelMetadataError(
            f"{origin}: unknown facecue format_version {version!r} (this facecue reads version {FORMAT_VERSION})"
        )
    try:
        tasks = tuple(
            TaskSpec(str(t["name"]), tuple(str(label) for label in t["labels"]), float(t.get("temperature", 1.0)))
            for t in document["tasks"]
        )
        model_input = document["input"]
        info = ModelInfo(
            tasks=tasks,
            input_name=str(model_input.get("name", "images")),
            input_size=int(model_input["size"]),
            crop_margin=float(document.get("crop", {}).get("margin", 0.0)),
            backbone=str(document.get("backbone", "unknown")),
            adapter=str(document.get("adapter", "none")),
            precision=str(document.get("precision", "fp32")),
            random_weights=bool(document.get("random_weights", False)),
            document=copy.deepcopy(document),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ModelMetadataError(f"{origin}: malformed facecue metadata ({type(error).__name__}: {error})") from None
    if not tasks:
        raise ModelMetadataError(f"{origin}: the facecue metadata lists no tasks")
    for task in tasks:
        if task.temperature <= 0:
            raise ModelMetadataError(f"{origin}: task {task.name!r} has a non-positive temperature {task.temperature}")
    return info


def info_from_metadata_map(metadata: dict[str, str], origin: str) -> ModelInfo:
    """From an ONNX metadata map (onnxruntime's `custom_metadata_map` or onnx's `metadata_props`)."""
    if METADATA_KEY not in metadata:
        raise ModelMetadataError(
            f"{origin} has no '{METADATA_KEY}' metadata: it is not a facecue model "
            "(make one with `python -m export`, see README)"
        )
    return parse_document(metadata[METADATA_KEY], origin)


def read_model_info(path: str | Path) -> ModelInfo:
    """Read the document of an ONNX model (`.onnx`) or a TensorRT engine (its `<engine>.json`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix in (".engine", ".plan", ".trt"):
        sidecar = Path(str(path) + ".json")
        if not sidecar.is_file():
            raise ModelMetadataError(f"{path}: the engine's metadata file {sidecar} is missing")
        return parse_document(sidecar.read_text(), str(sidecar))
    import onnx  # only the protobuf header is needed; external weights stay on disk

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and friends
        raise ModelMetadataError(f"{path} is not a readable ONNX model ({error})") from None
    return info_from_metadata_map({p.key: p.value for p in model.metadata_props}, str(path))


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=False)
