"""Which nodes of a facecue graph get INT8 weights and activations, found by graph structure and scope.

A node is quantized when its op type is listed (MatMul, Gemm by default), its weight (input 1) is an
initializer, and its module scope is not excluded. Structure alone keeps the attention-score MatMuls
(two activations) in float; residual Adds, LayerNorm, Softmax and the RoPE Muls are never listed op
types. The scope comes from the exporter's node metadata (`pkg.torch.onnx.name_scopes`, e.g.
`backbone.blocks.3.mlp.fc1`); graphs without it fall back to the node name.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

import onnx

from calibration.config import Int8Config

SCOPE_KEY = "pkg.torch.onnx.name_scopes"
QUANTIZED_OP_TYPES = {"QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QLinearConv", "MatMulInteger",
                      "ConvInteger", "DynamicQuantizeLinear", "MatMulIntegerToFloat", "QGemm"}


@dataclass
class QuantizationPlan:
    nodes: list[str]  # node names to quantize
    activations: list[str]  # their float activation inputs: the only tensors calibrated
    kept_float: dict[str, int] = field(default_factory=dict)  # reason → number of candidate nodes kept in float


def node_scopes(node: onnx.NodeProto) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            try:
                return [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                break
    return [node.name]


def is_excluded(node: onnx.NodeProto, config: Int8Config) -> bool:
    if node.name in config.exclude_nodes:
        return True
    return any(scope.startswith(pattern) for scope in node_scopes(node) for pattern in config.exclude_scopes)


def plan_quantization(model: onnx.ModelProto, config: Int8Config) -> QuantizationPlan:
    weights = {init.name for init in model.graph.initializer}
    plan = QuantizationPlan(nodes=[], activations=[])
    for node in model.graph.node:
        if node.op_type not in config.op_types:
            continue
        if len(node.input) < 2 or node.input[1] not in weights:
            reason = "two activations (attention scores)"
        elif is_excluded(node, config):
            reason = "excluded scope or node"
        else:
            plan.nodes.append(node.name)
            if node.input[0] not in plan.activations:
                plan.activations.append(node.input[0])
            continue
        plan.kept_float[reason] = plan.kept_float.get(reason, 0) + 1
    return plan


def quantized_op_types(model: onnx.ModelProto) -> set[str]:
    """The quantization ops a graph already has (empty for a float model)."""
    return {node.op_type for node in model.graph.node if node.op_type in QUANTIZED_OP_TYPES}


def quantized_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes of a QDQ graph whose input comes through a DequantizeLinear: the ones running on INT8 values."""
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [node for node in model.graph.node
            if node.op_type not in QUANTIZED_OP_TYPES and any(i in dequantized for i in node.input)]
