"""The graph signature a facecue model must have, checked the same way by every backend.

MINIMAL VERSION written by i15 (OpenVINO backend) because i10a's module was not in this branch; it has the
agreed signature. The input is the metadata's input name, uint8, [batch, S, S, 3] with S the metadata's size;
every task of the metadata is an output of shape [batch, number of labels]. Dynamic axes (str or None) match
anything.
"""
from __future__ import annotations

from pathlib import Path

from runtime.metadata import ModelInfo, ModelMetadataError


def _static(dim) -> bool:
    return isinstance(dim, int) and dim >= 0


def check_graph(path: str | Path, info: ModelInfo, input_name: str, input_shape: list, input_dtype: str,
                outputs: dict[str, list]) -> None:
    """Raise ModelMetadataError when the graph (its one input and its outputs) does not fit the metadata."""
    if input_name != info.input_name:
        raise ModelMetadataError(f"{path}: metadata names input {info.input_name!r}, the graph has {input_name!r}")
    if input_dtype != "uint8":
        raise ModelMetadataError(f"{path}: input {input_name!r} is {input_dtype}, expected uint8")
    size = info.input_size
    want = [None, size, size, 3]
    if len(input_shape) != 4 or any(_static(got) and w is not None and got != w for got, w in zip(input_shape, want)):
        raise ModelMetadataError(f"{path}: input {input_name!r} has shape {input_shape}, expected [N, {size}, {size}, 3]")
    missing = [name for name in info.task_names if name not in outputs]
    if missing:
        raise ModelMetadataError(f"{path}: metadata lists tasks {missing} that are not graph outputs {sorted(outputs)}")
    for task in info.tasks:
        shape = outputs[task.name]
        if len(shape) != 2 or (_static(shape[1]) and shape[1] != len(task.labels)):
            raise ModelMetadataError(f"{path}: output {task.name!r} has shape {shape}, expected "
                                     f"[N, {len(task.labels)}] for its {len(task.labels)} labels")
