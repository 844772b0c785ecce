"""Shared pytest fixtures."""
# --- export (tests/test_export*.py); keep at the top -------------------------------------------------
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY_BACKBONE = REPO / "configs" / "models" / "pe-core-test-tiny.yaml"
ALL_TASKS = ("Age", "Gender", "Emotion")
EXPORT_EXTRA = ("torch", "timm", "peft", "safetensors", "onnxscript")  # what `pip install -e ".[export]"` adds


def require_export_extra() -> None:
    """Skip (a module, at its top, or a test) without the export extra: `pip install -e ".[dev]"` alone runs the
    runtime-only suite green."""
    for package in EXPORT_EXTRA:
        pytest.importorskip(package)


def export_tiny(directory: Path, tasks=ALL_TASKS, seed: int = 0) -> Path:
    """A tiny PE-Core + DoRA + deep-head model through the public export functions: thesis-layout files
    (written by the independent reference with PEFT) → build_model → export_onnx."""
    from export.build import build_model, model_document
    from export.onnx_export import export_onnx
    from pe_reference import tiny_config, write_thesis_files

    weights, adapters, _ = write_thesis_files(directory, tiny_config(TINY_BACKBONE), tasks, seed=seed)
    model = build_model(TINY_BACKBONE, weights=weights, adapters=adapters)
    return export_onnx(model, directory / "model.onnx", model_document(model, weights=weights, adapters=adapters))


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """`factory(tasks=("Age", "Gender", "Emotion"))` → path of a tiny exported ONNX model (cached per task set).
    Input size 32, DoRA adapters, deep heads; the metadata says `random_weights: false` (test weights)."""
    cache: dict[tuple[str, ...], Path] = {}

    def factory(tasks=ALL_TASKS) -> Path:
        require_export_extra()  # every test that needs a tiny model skips without it
        key = tuple(tasks)
        if key not in cache:
            cache[key] = export_tiny(tmp_path_factory.mktemp("tiny-" + "-".join(key).lower()), key)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory) -> Path:
    """A tiny exported ONNX model with all three tasks (age, gender, emotion)."""
    return tiny_model_factory()
# --- end export ---------------------------------------------------------------------------------------
