"""Check a model's graph against its `facecue` metadata at load, so a mismatch is bad input (exit 2) naming
the model file, the task and both values, instead of a failure in the middle of a run.

Every backend calls `check_graph` with what its runtime reports: shapes as lists with ints for static
dimensions and str/None for dynamic ones, the input's element type as a numpy name ("uint8"), and one
shape per graph output. A dynamic dimension cannot disagree, so it passes.
"""
from __future__ import annotations

from pathlib import Path

from runtime.metadata import ModelInfo, ModelMetadataError

# ONNX Runtime's element type names → numpy's
ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(float)": "float32",
             "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int32)": "int32",
             "tensor(int64)": "int64"}


def check_graph(path: str | Path, info: ModelInfo, input_name: str, input_shape: list, input_dtype: str,
                outputs: dict[str, list]) -> None:
    """Raise ModelMetadataError when the graph disagrees with the metadata: input name, dtype, layout NHWC
    (channels last, 3), static height and width vs `input.size`, and each task's output width vs its labels."""
    model_input = info.document.get("input", {}) if isinstance(info.document, dict) else {}
    layout, dtype = model_input.get("layout", "NHWC"), model_input.get("dtype", "uint8")
    if layout != "NHWC":
        raise ModelMetadataError(f"{path}: metadata input layout {layout!r}, the runtime feeds NHWC")
    if dtype != "uint8":
        raise ModelMetadataError(f"{path}: metadata input dtype {dtype!r}, the runtime feeds uint8")
    if input_name != info.input_name:
        raise ModelMetadataError(f"{path}: metadata names input {info.input_name!r}, the graph's input is {input_name!r}")
    if input_dtype != "uint8":
        raise ModelMetadataError(f"{path}: input {input_name!r} is {input_dtype} in the graph, the metadata says uint8")
    shape = list(input_shape)
    if len(shape) != 4:
        raise ModelMetadataError(f"{path}: input {input_name!r} has shape {shape} in the graph, expected "
                                 f"[N, {info.input_size}, {info.input_size}, 3] (NHWC)")
    _, height, width, channels = shape
    if _static(channels) and channels != 3:
        raise ModelMetadataError(f"{path}: input {input_name!r} has {channels} channels last in the graph "
                                 f"(shape {shape}); the metadata says NHWC with 3")
    for axis, value in (("height", height), ("width", width)):
        if _static(value) and value != info.input_size:
            raise ModelMetadataError(f"{path}: input {axis} is {value} in the graph, the metadata's input size is "
                                     f"{info.input_size}")
    for task in info.tasks:
        if task.name not in outputs:
            raise ModelMetadataError(f"{path}: metadata lists task {task.name!r}, the graph's outputs are "
                                     f"{sorted(outputs)}")
        output = list(outputs[task.name])
        width = output[-1] if output else None
        if len(output) != 2 or (_static(width) and width != len(task.labels)):
            raise ModelMetadataError(f"{path}: task {task.name!r}: the graph's output has shape {output} "
                                     f"({width} classes), the metadata lists {len(task.labels)} labels")


def _static(dimension) -> bool:
    return isinstance(dimension, int) and not isinstance(dimension, bool) and dimension > 0
