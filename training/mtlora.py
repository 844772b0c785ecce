"""MTLoRA (reference §5): shared DoRA below, task-specific LoRA in the last block and per-task attention pools.

Built from export/'s timm PE-Core (no second tower): blocks 0..depth-2 keep PEFT DoRA (the shared,
task-agnostic adapter); the last block and the attention pool are re-expressed with `MTLoRALinear`s
holding copies of their frozen weights, in the thesis' module names so `state_dict()` gives
`custom_layers.pt`'s `mtl_layer` / `mtl_attn_pool` keys exactly (§11). Heads take each task's pooled
vector without `proj`, so their input size is the backbone width.

As in the thesis: the shared LoRA of each MTLoRALinear is stored but has scale 0 (we keep it frozen and
skip computing it: it adds exactly 0); task LoRA scale is 1; the frozen weight acts on the shared-path
activation and each task's LoRA on that task's activation. Only tasks' own outputs depend on their
branches, so a task's LoRA gets gradients from its own loss alone.

Should export/ grow its own MTLoRA module (export/mtlora.py), these classes are the ones to move there.
"""
from __future__ import annotations

import copy
import math

import torch
from peft import get_peft_model, LoraConfig
from torch import nn
from torch.nn import functional as F
from timm.layers import apply_rot_embed_cat

from export.config import BackboneConfig
from export.heads import make_heads
from export.model import Preprocess
from training.config import TrainConfig


class MTLoRALinear(nn.Module):
    """Frozen `linear` on the shared input + per-task low-rank update B_t A_t on the task input."""

    def __init__(self, base: nn.Linear, tasks: list[str], rank: int):
        super().__init__()
        self.linear = copy.deepcopy(base).requires_grad_(False)
        out_dim, in_dim = base.weight.shape
        self.lora_shared_A = nn.Parameter(_kaiming(rank, in_dim), requires_grad=False)  # scale 0 in the thesis
        self.lora_shared_B = nn.Parameter(torch.zeros(out_dim, rank), requires_grad=False)
        self.lora_tasks_A = nn.ParameterDict({t: nn.Parameter(_kaiming(rank, in_dim)) for t in tasks})
        self.lora_tasks_B = nn.ParameterDict({t: nn.Parameter(torch.zeros(out_dim, rank)) for t in tasks})

    def forward(self, shared: torch.Tensor, per_task: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        base = self.linear(shared)
        return base, {t: base + F.linear(F.linear(x, self.lora_tasks_A[t]), self.lora_tasks_B[t])
                      for t, x in per_task.items()}


def _kaiming(rank: int, in_dim: int) -> torch.Tensor:
    weight = torch.empty(rank, in_dim)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # PEFT's default init of lora_A
    return weight


def _split(linear: nn.Linear, parts: int) -> list[nn.Linear]:
    """A fused Linear (q|k|v rows) as `parts` Linears."""
    out = linear.out_features // parts
    pieces = []
    for i in range(parts):
        piece = nn.Linear(linear.in_features, out, bias=linear.bias is not None)
        with torch.no_grad():
            piece.weight.copy_(linear.weight[i * out:(i + 1) * out])
            if linear.bias is not None:
                piece.bias.copy_(linear.bias[i * out:(i + 1) * out])
        pieces.append(piece)
    return pieces


def _heads_view(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class MLP(nn.Module):
    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, tasks: list[str], rank: int):
        super().__init__()
        self.c_fc, self.c_proj = MTLoRALinear(fc1, tasks, rank), MTLoRALinear(fc2, tasks, rank)


class MTLoRABlock(nn.Module):
    """The last PE block, one shared path + one path per task (reference §5 steps 1–5)."""

    def __init__(self, block: nn.Module, tasks: list[str], rank: int):
        super().__init__()
        self.num_heads, self.num_prefix = block.attn.num_heads, block.attn.num_prefix_tokens
        self.ln_1 = copy.deepcopy(block.norm1).requires_grad_(False)
        self.ln_2 = copy.deepcopy(block.norm2).requires_grad_(False)
        q, k, v = _split(block.attn.qkv, 3)
        self.attn = nn.ModuleDict({"q": MTLoRALinear(q, tasks, rank), "k": MTLoRALinear(k, tasks, rank),
                                   "v": MTLoRALinear(v, tasks, rank)})
        self.out_proj = MTLoRALinear(block.attn.proj, tasks, rank)
        self.mlp = MLP(block.mlp.fc1, block.mlp.fc2, tasks, rank)

    def attention(self, q, k, v, rope):
        q, k, v = (_heads_view(t, self.num_heads) for t in (q, k, v))
        n = self.num_prefix  # timm leaves the CLS token unrotated (= Meta's zero angle)
        q = torch.cat([q[:, :, :n], apply_rot_embed_cat(q[:, :, n:], rope)], dim=2).type_as(v)
        k = torch.cat([k[:, :, :n], apply_rot_embed_cat(k[:, :, n:], rope)], dim=2).type_as(v)
        return _merge_heads(F.scaled_dot_product_attention(q, k, v))

    def forward(self, h: torch.Tensor, rope: torch.Tensor, tasks: list[str]) -> dict[str, torch.Tensor]:
        n1 = self.ln_1(h)
        inputs = {t: n1 for t in tasks}
        (qs, qt), (ks, kt), (vs, vt) = (self.attn[name](n1, inputs) for name in ("q", "k", "v"))
        a_s = self.attention(qs, ks, vs, rope)
        a_t = {t: self.attention(qt[t], kt[t], vt[t], rope) for t in tasks}
        o_s, o_t = self.out_proj(a_s, a_t)
        x_s, x_t = h + o_s, {t: h + o for t, o in o_t.items()}
        f_s, f_t = self.mlp.c_fc(self.ln_2(x_s), {t: self.ln_2(x) for t, x in x_t.items()})
        _, p_t = self.mlp.c_proj(F.gelu(f_s), {t: F.gelu(f) for t, f in f_t.items()})
        return {t: x_t[t] + p_t[t] for t in tasks}  # the shared output is discarded


class MTLoRAPool(nn.Module):
    """Per-task attention pools: probe_t, q/k/v/out with task LoRA, then z + mlp(layernorm(z))."""

    def __init__(self, pool: nn.Module, tasks: list[str], rank: int):
        super().__init__()
        self.num_heads = pool.num_heads
        self.probe = nn.ParameterDict({t: nn.Parameter(pool.latent.detach().clone()) for t in tasks})
        k, v = _split(pool.kv, 2)
        self.q_proj, self.k_proj = MTLoRALinear(pool.q, tasks, rank), MTLoRALinear(k, tasks, rank)
        self.v_proj, self.out_proj = MTLoRALinear(v, tasks, rank), MTLoRALinear(pool.proj, tasks, rank)
        self.layernorm = copy.deepcopy(pool.norm).requires_grad_(False)
        self.mlp = MLP(pool.mlp.fc1, pool.mlp.fc2, tasks, rank)

    def forward(self, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pooled = {}
        for t, x in tokens.items():
            def task(layer, inp):  # shared and task inputs are the same tensor here
                return layer(inp, {t: inp})[1][t]
            probe = self.probe[t].expand(x.shape[0], -1, -1)
            q, k, v = task(self.q_proj, probe), task(self.k_proj, x), task(self.v_proj, x)
            z = task(self.out_proj, _merge_heads(F.scaled_dot_product_attention(
                *(_heads_view(y, self.num_heads) for y in (q, k, v)))))
            z = z + task(self.mlp.c_proj, F.gelu(task(self.mlp.c_fc, self.layernorm(z))))
            pooled[t] = z[:, 0]
        return pooled


class MTLoRAFaceModel(nn.Module):
    """uint8 crops → shared PE blocks (DoRA) → MTLoRA last block → shared ln_post → task pools → heads."""

    def __init__(self, config: BackboneConfig, backbone: nn.Module, mtl_layer: MTLoRABlock, norm: nn.Module,
                 mtl_attn_pool: MTLoRAPool, heads: nn.ModuleDict):
        super().__init__()
        self.config, self.adapter, self.random_weights = config, "mtlora", False
        self.preprocess, self.backbone, self.mtl_layer = Preprocess(), backbone, mtl_layer
        self.norm, self.mtl_attn_pool, self.heads = norm, mtl_attn_pool, heads

    @property
    def task_names(self) -> list[str]:
        return [t.lower() for t in self.heads]

    def shared_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens after blocks 0..depth-2 (not normalised) and the RoPE table."""
        eva = self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone
        x = eva.patch_embed(self.preprocess(images))
        x, rope = eva._pos_embed(x)
        x = eva.norm_pre(x)
        for block in eva.blocks:
            if eva.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, rope=rope, use_reentrant=False)
            else:
                x = block(x, rope=rope)
        return x, rope

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, rope = self.shared_tokens(images)
        tasks = list(self.heads)
        per_task = self.mtl_layer(h, rope, tasks)
        pooled = self.mtl_attn_pool({t: self.norm(x) for t, x in per_task.items()})
        return tuple(self.heads[t](pooled[t]) for t in tasks)

    def custom_layers(self) -> dict[str, dict]:
        return {"mtl_layer": self.mtl_layer.state_dict(), "mtl_attn_pool": self.mtl_attn_pool.state_dict()}


def build_mtlora_model(config: TrainConfig, backbone_config: BackboneConfig, backbone: nn.Module) -> MTLoRAFaceModel:
    from training.model import adaptable_modules

    tasks, rank = list(config.data.tasks), config.adapter.rank
    mtl_layer = MTLoRABlock(backbone.blocks[-1], tasks, rank)
    mtl_attn_pool = MTLoRAPool(backbone.attn_pool, tasks, rank)
    norm = copy.deepcopy(backbone.norm).requires_grad_(False)  # ln_post, shared and frozen
    backbone.blocks = backbone.blocks[:-1]
    backbone.attn_pool = None  # replaced by the task pools; `head` (proj) stays but is unused
    shared = LoraConfig(r=rank, lora_alpha=config.adapter.alpha, lora_dropout=config.adapter.dropout, use_dora=True,
                        bias="none", target_modules=adaptable_modules(backbone))
    backbone = get_peft_model(backbone, shared)
    hidden = backbone_config.head_hidden if config.model.deep_head else None
    heads = make_heads(backbone_config.width, tasks, hidden)  # pooled vectors without proj: width-d
    return MTLoRAFaceModel(backbone_config, backbone, mtl_layer, norm, mtl_attn_pool, heads)
