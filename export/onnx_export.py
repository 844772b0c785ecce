"""FaceAttributeModel → one ONNX file (design.md's model contract), written atomically.

torch's dynamo exporter (`torch.onnx.export(dynamo=True)`) gives a clean graph for timm's Eva:
LayerNorm as one `LayerNormalization` op, RoPE tables and position embeddings as constants at the
export size, and a dynamic batch axis; the TorchScript exporter fails on timm's SDPA call. The RoPE
rotation is then rewritten as one Gather per query and key (export/rope_rotation.py: same values, bit for
bit, and a fast kernel in OpenVINO).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import onnx
import torch

from export.model import FaceAttributeModel
from export.rope_rotation import rewrite_rope_rotation
from runtime.metadata import METADATA_KEY, to_json
from facecue import interrupts
from facecue.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
DEFAULT_EXTERNAL_DATA_THRESHOLD = 2 * 1024**3  # bytes of weights; protobuf cannot hold more than 2 GB


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def export_onnx(model: FaceAttributeModel, out_path: str | Path, document: dict, opset: int = DEFAULT_OPSET,
                external_data_threshold: int = DEFAULT_EXTERNAL_DATA_THRESHOLD) -> Path:
    """Export to `out_path` (plus `<out_path>.data` when the weights exceed the threshold)."""
    if opset < 17:
        raise ValueError(f"opset {opset} < 17: LayerNormalization needs opset 17 or later")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    external = weight_bytes(model) > external_data_threshold
    size = model.config.image_size
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    log.info("exporting ONNX (opset %d, %s) to %s", opset, "external data" if external else "one file", out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.") as tmp:
        tmp_model = Path(tmp) / out_path.name  # same name, so the external-data location stays valid
        with Progress("exporting ONNX", log, unit=None), torch.no_grad():  # one call, 10 s to minutes
            program = torch.onnx.export(
                model.eval(), (example,), dynamo=True, opset_version=opset, input_names=["images"],
                output_names=model.task_names, dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},),
                verbose=False,
            )
            rotations = rewrite_rope_rotation(program.model)
            log.info("RoPE rotation as Gather in %d attention inputs (export/rope_rotation.py)", rotations)
            program.model.metadata_props[METADATA_KEY] = to_json(document)
            program.save(str(tmp_model), external_data=external)
            onnx.checker.check_model(str(tmp_model))
            check_graph(onnx.load(str(tmp_model), load_external_data=False), model.task_names)
        interrupts.check()  # Ctrl-C swallowed inside the exporter: write nothing
        data = Path(str(out_path) + ".data")
        if external:
            shutil.move(Path(tmp) / data.name, data)
        elif data.exists():
            data.unlink()  # a stale sidecar of an earlier export
        tmp_model.replace(out_path)  # the model file appears last, complete
    log.info("wrote %s (%.1f MB of weights)", out_path, weight_bytes(model) / 1e6)
    return out_path


def check_graph(proto: onnx.ModelProto, task_names: list[str]) -> None:
    """The contract's structural points: input, outputs, opset, LayerNorm as one op."""
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != ["images"] or outputs != task_names:
        raise RuntimeError(f"exported graph has inputs {inputs} and outputs {outputs}, expected ['images'] and {task_names}")
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    if opset < 17 or "LayerNormalization" not in ops:
        raise RuntimeError(f"exported graph has opset {opset} and ops {sorted(ops)}: LayerNormalization missing")
