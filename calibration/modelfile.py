"""Read a facecue ONNX model's document and write models atomically (temp file in the same folder, then rename).

Models with external data (`<model>.onnx.data`, L14 and larger exports) keep working: a new file gets
its own `<new>.onnx.data`; an in-place update rewrites only the small graph file.
"""
from __future__ import annotations

import json
import shutil
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx

from calibration.errors import CalibrationError
from calibration.graph import quantized_op_types
from runtime.metadata import METADATA_KEY, ModelInfo, ModelMetadataError, info_from_metadata_map
from facecue import interrupts


def read_header(path: str | Path) -> onnx.ModelProto:
    """The graph without external weights (cheap even for L14)."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"model file not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises protobuf DecodeError and friends
        raise CalibrationError(f"{path} is not a readable ONNX model ({error})") from None


def model_info(model: onnx.ModelProto, origin: str) -> ModelInfo:
    try:
        return info_from_metadata_map({p.key: p.value for p in model.metadata_props}, origin)
    except ModelMetadataError as error:
        raise CalibrationError(str(error)) from None


def require_float(model: onnx.ModelProto, info: ModelInfo, origin: str) -> None:
    """Calibration starts from the float export: a quantized model would be quantized twice."""
    ops = quantized_op_types(model)
    if ops or info.precision.startswith("int8"):
        raise CalibrationError(f"{origin} is already quantized (precision {info.precision!r}, ops {sorted(ops)}); "
                               "calibrate the FP32 model from `python -m export` instead")


def has_external_data(model: onnx.ModelProto) -> bool:
    return any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)


def set_document(model: onnx.ModelProto, document: dict[str, Any]) -> None:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = json.dumps(document)
            return
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(document))


def file_mode() -> int:
    """0644 under the usual umask 022: what an ordinary new file gets (temp files are made 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def staging_dir(out_path: Path):
    """A temp folder beside `out_path` (same file system, so the final renames are atomic); removed on exit."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.") as tmp:
        yield Path(tmp)


def publish(staged: Path, out_path: Path) -> None:
    """Move a staged model (and its `.data` sidecar, if any) into place; the model file appears last."""
    interrupts.check()  # an interrupt swallowed during the work: publish nothing
    data = Path(str(staged) + ".data")
    if data.exists():
        shutil.move(data, Path(str(out_path) + ".data"))
    staged.replace(out_path)


def write_with_document(source: Path, out_path: Path, document: dict[str, Any]) -> Path:
    """`source` with a new facecue document, written to `out_path` (may equal `source`)."""
    header = read_header(source)
    in_place = source.resolve() == out_path.resolve()
    if in_place or not has_external_data(header):
        model = header if in_place else onnx.load(str(source))
        set_document(model, document)
        with tempfile.NamedTemporaryFile(dir=out_path.parent, prefix=f".{out_path.name}.", delete=False) as tmp:
            staged = Path(tmp.name)
        try:
            onnx.save(model, str(staged))
            staged.chmod(file_mode())  # NamedTemporaryFile is owner-only (0600); a model is an ordinary file
            interrupts.check()
            staged.replace(out_path)
        finally:
            staged.unlink(missing_ok=True)
        return out_path
    model = onnx.load(str(source))  # with its weights, to write a sidecar of its own
    set_document(model, document)
    with staging_dir(out_path) as tmp:
        staged = tmp / out_path.name
        onnx.save(model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=out_path.name + ".data")
        publish(staged, out_path)
    return out_path
