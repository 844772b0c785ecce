"""MTLoRA: a task-specific final block and attention pools.

The thesis' second model keeps PE-Core blocks 0..n-2 (shared DoRA, merged by export/adapters.py) and
replaces block n-1 by `mtl_layer` and the attention pool by `mtl_attn_pool` (`custom_layers.pt`).
Each of their Linears is an `MTLoRALinear`: a frozen W, b, a stored shared LoRA used with scale 0,
and one LoRA per task with scale 1. In the final block a task's output is W·x_shared + b + B_t·A_t·x_task,
so the block computes the shared path plus one path per task and cannot be merged. In the pool the
two inputs are the same tensor, so each task's pool merges into an ordinary timm `AttentionPoolLatent`.

The modules keep the task LoRA factors as trainable Parameters under the thesis' key names, so their
`state_dict` is the checkpoint layout and training/ can reuse them. The final block's attention
is written here (not timm's EvaAttention) because each task's q/k/v is the shared projection plus a
low-rank term; RoPE is timm's own `apply_rot_embed_cat` with the backbone's table.
"""
from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from timm.layers import apply_rot_embed_cat
from torch import nn

from export.config import BackboneConfig
from export.errors import CheckpointError
from export.heads import THESIS_TASKS
from export.model import FaceAttributeModel

log = logging.getLogger(__name__)

MTLORA_SECTIONS = ("mtl_layer", "mtl_attn_pool")  # the custom_layers.pt entries that mark an MTLoRA checkpoint
BLOCK_LINEARS = ("attn.q", "attn.k", "attn.v", "out_proj", "mlp.c_fc", "mlp.c_proj")
POOL_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "mlp.c_fc", "mlp.c_proj")


class MTLoRALinear(nn.Module):
    """Frozen `linear` + shared LoRA (stored, scale 0) + one LoRA per task (scale 1), as the thesis' MTLoRALinear."""

    shared_scale = 0.0  # thesis: the shared branch is multiplied by 0, so it never changes an output
    task_scale = 1.0    # a plain multiplier, not alpha/r

    def __init__(self, in_dim: int, out_dim: int, rank: int, tasks):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim).requires_grad_(False)
        # stored for the checkpoint layout only: scale 0, so it never trains
        self.lora_shared_A = nn.Parameter(torch.empty(rank, in_dim), requires_grad=False)
        self.lora_shared_B = nn.Parameter(torch.zeros(out_dim, rank), requires_grad=False)
        self.lora_tasks_A = nn.ParameterDict({t: nn.Parameter(torch.empty(rank, in_dim)) for t in tasks})
        self.lora_tasks_B = nn.ParameterDict({t: nn.Parameter(torch.zeros(out_dim, rank)) for t in tasks})
        for a in [self.lora_shared_A, *self.lora_tasks_A.values()]:  # LoRA's usual start: A random, B zero
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    @classmethod
    def from_linear(cls, base: nn.Linear, rank: int, tasks) -> MTLoRALinear:
        """Wrap a pretrained Linear (e.g. a timm block's), as the thesis builds its MTLoRA layers for training."""
        layer = cls(base.in_features, base.out_features, rank, tasks)
        layer.linear.load_state_dict(base.state_dict())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The shared path: the frozen linear (its LoRA has scale 0, so it is left out)."""
        return self.linear(x)

    def task_delta(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """s_t·B_t·A_t·x, the low-rank term a task adds to the frozen output."""
        return self.task_scale * F.linear(F.linear(x, self.lora_tasks_A[task]), self.lora_tasks_B[task])

    def merged(self, task: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(W + s_t·B_t·A_t, b): the task's Linear when its shared and task inputs are the same tensor."""
        weight = self.linear.weight + self.task_scale * self.lora_tasks_B[task] @ self.lora_tasks_A[task]
        return weight.detach(), self.linear.bias.detach()


def _mlp(width: int, hidden: int, rank: int, tasks) -> nn.ModuleDict:
    return nn.ModuleDict({"c_fc": MTLoRALinear(width, hidden, rank, tasks), "c_proj": MTLoRALinear(hidden, width, rank, tasks)})


def _split(fused: nn.Linear, parts: int) -> list[nn.Linear]:
    """timm's fused q|k|v (or k|v) Linear as `parts` Linears, the thesis' separate projections."""
    pieces = []
    for weight, bias in zip(fused.weight.detach().chunk(parts), fused.bias.detach().chunk(parts)):
        piece = nn.Linear(fused.in_features, weight.shape[0])
        piece.load_state_dict({"weight": weight, "bias": bias})
        pieces.append(piece)
    return pieces


def _mlp_from(mlp: nn.Module, rank: int, tasks) -> nn.ModuleDict:
    return nn.ModuleDict({"c_fc": MTLoRALinear.from_linear(mlp.fc1, rank, tasks),
                          "c_proj": MTLoRALinear.from_linear(mlp.fc2, rank, tasks)})


class MTLoRABlock(nn.Module):
    """`mtl_layer`: PE's last pre-norm block with a shared path and one path per task (the thesis' final block per task).

    forward(h, rope) → {task: tokens}; h is the previous block's output (CLS first, not normalised)
    and rope timm's table for the patch tokens (CLS is not rotated, as Meta's zero angle).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, rank: int, tasks):
        super().__init__()
        self.tasks, self.heads = tuple(tasks), heads
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = nn.ModuleDict({p: MTLoRALinear(width, width, rank, tasks) for p in "qkv"})
        self.out_proj = MTLoRALinear(width, width, rank, tasks)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = _mlp(width, int(width * mlp_ratio), rank, tasks)

    @classmethod
    def from_timm(cls, block: nn.Module, rank: int, tasks) -> MTLoRABlock:
        """The training start: a pretrained timm Eva block's weights, frozen, plus fresh task LoRAs (B = 0)."""
        width = block.attn.qkv.in_features
        layer = cls(width, block.attn.num_heads, block.mlp.fc1.out_features / width, rank, tasks)
        layer.attn = nn.ModuleDict({p: MTLoRALinear.from_linear(linear, rank, tasks)
                                    for p, linear in zip("qkv", _split(block.attn.qkv, 3))})
        layer.out_proj = MTLoRALinear.from_linear(block.attn.proj, rank, tasks)
        layer.mlp = _mlp_from(block.mlp, rank, tasks)
        layer.ln_1.load_state_dict(block.norm1.state_dict())
        layer.ln_2.load_state_dict(block.norm2.state_dict())
        return layer

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        b, n, d = q.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q, k = (torch.cat([t[:, :, :1], apply_rot_embed_cat(t[:, :, 1:], rope)], dim=2) for t in (q, k))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)

    def forward(self, h: torch.Tensor, rope: torch.Tensor) -> dict[str, torch.Tensor]:
        n1 = self.ln_1(h)
        qkv = {p: self.attn[p](n1) for p in "qkv"}                  # W·n1 + b, shared by every path
        attn_shared = self.out_proj(self.attention(qkv["q"], qkv["k"], qkv["v"], rope))
        fc_shared = self.mlp.c_fc(self.ln_2(h + attn_shared))         # W_fc·ln_2(x_s) + b
        proj_shared = self.mlp.c_proj(F.gelu(fc_shared))              # W_proj·g_s + b
        out = {}
        for task in self.tasks:
            q, k, v = (qkv[p] + self.attn[p].task_delta(n1, task) for p in "qkv")
            x = h + attn_shared + self.out_proj.task_delta(self.attention(q, k, v, rope), task)
            g = F.gelu(fc_shared + self.mlp.c_fc.task_delta(self.ln_2(x), task))
            out[task] = x + proj_shared + self.mlp.c_proj.task_delta(g, task)
        return out


class MTLoRAAttentionPool(nn.Module):
    """`mtl_attn_pool`: PE's attention pool with a probe and LoRAs per task (the thesis' pool per task).

    forward(tokens, task) is the unmerged form (for training); `merged_pool` gives the export form.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, rank: int, tasks):
        super().__init__()
        self.heads = heads
        self.probe = nn.ParameterDict({t: nn.Parameter(torch.zeros(1, 1, width)) for t in tasks})
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, MTLoRALinear(width, width, rank, tasks))
        self.layernorm = nn.LayerNorm(width, eps=1e-5)
        self.mlp = _mlp(width, int(width * mlp_ratio), rank, tasks)

    @classmethod
    def from_timm(cls, pool: nn.Module, rank: int, tasks) -> MTLoRAAttentionPool:
        """The training start: timm's AttentionPoolLatent (the inverse of `merged_pool`), task LoRAs fresh."""
        width = pool.q.in_features
        layer = cls(width, pool.num_heads, pool.mlp.fc1.out_features / width, rank, tasks)
        with torch.no_grad():
            for probe in layer.probe.values():
                probe.copy_(pool.latent)
        k, v = _split(pool.kv, 2)
        for name, linear in (("q_proj", pool.q), ("k_proj", k), ("v_proj", v), ("out_proj", pool.proj)):
            setattr(layer, name, MTLoRALinear.from_linear(linear, rank, tasks))
        layer.mlp = _mlp_from(pool.mlp, rank, tasks)
        layer.layernorm.load_state_dict(pool.norm.state_dict())
        return layer

    def _linear(self, module: MTLoRALinear, x: torch.Tensor, task: str) -> torch.Tensor:
        return module(x) + module.task_delta(x, task)  # shared and task inputs are the same tensor here

    def forward(self, tokens: torch.Tensor, task: str) -> torch.Tensor:
        b, n, d = tokens.shape
        q = self._linear(self.q_proj, self.probe[task].expand(b, -1, -1), task)
        k, v = self._linear(self.k_proj, tokens, task), self._linear(self.v_proj, tokens, task)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        z = self._linear(self.out_proj, F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, d), task)
        hidden = F.gelu(self._linear(self.mlp.c_fc, self.layernorm(z), task))
        return (z + self._linear(self.mlp.c_proj, hidden, task)).squeeze(1)  # no residual from the probe

    @torch.no_grad()
    def merged_pool(self, task: str, template: nn.Module) -> nn.Module:
        """A copy of timm's AttentionPoolLatent `template` holding this task's merged weights."""
        pool = copy.deepcopy(template)
        (q_w, q_b), (k_w, k_b), (v_w, v_b) = (m.merged(task) for m in (self.q_proj, self.k_proj, self.v_proj))
        pool.latent.copy_(self.probe[task])
        pool.q.weight.copy_(q_w), pool.q.bias.copy_(q_b)
        pool.kv.weight.copy_(torch.cat([k_w, v_w])), pool.kv.bias.copy_(torch.cat([k_b, v_b]))
        for target, source in ((pool.proj, self.out_proj), (pool.mlp.fc1, self.mlp.c_fc), (pool.mlp.fc2, self.mlp.c_proj)):
            weight, bias = source.merged(task)
            target.weight.copy_(weight), target.bias.copy_(bias)
        pool.norm.load_state_dict(self.layernorm.state_dict())
        return pool


class MergedPools(nn.ModuleDict):
    """One ordinary attention pool per task, called like MTLoRAAttentionPool: pools(tokens, task)."""

    def forward(self, tokens: torch.Tensor, task: str) -> torch.Tensor:
        return self[task](tokens)


class MTLoRATower(nn.Module):
    """timm Eva blocks 0..n-2 → MTLoRA block → shared ln_post → per-task pool → {task: [B, width]} (no `proj`)."""

    def __init__(self, trunk: nn.Module, block: MTLoRABlock, pools: nn.Module):
        super().__init__()
        self.post_norm = trunk.norm  # Meta's ln_post, shared by every task
        trunk.prune_intermediate_layers([len(trunk.blocks) - 2], prune_norm=True, prune_head=True)  # drop the last block
        self.trunk, self.block, self.pools = trunk, block, pools

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.block(self.trunk.forward_features(x), self.trunk.rope.get_embed())
        return {task: self.pools(self.post_norm(t), task) for task, t in tokens.items()}


class MTLoRAFaceAttributeModel(FaceAttributeModel):
    """FaceAttributeModel whose heads each read their own task's feature."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone(self.preprocess(images))
        return tuple(head(features[task]) for task, head in self.heads.items())


# --- reading and checking an MTLoRA checkpoint -----------------------------------------------------------

def read_sections(checkpoint: dict, origin: str) -> dict[str, dict[str, torch.Tensor]]:
    """`mtl_layer` and `mtl_attn_pool` (each may be wrapped in a one-element list, as the thesis loader allows)."""
    sections = {}
    for name in MTLORA_SECTIONS:
        section = checkpoint.get(name)
        if isinstance(section, (list, tuple)) and len(section) == 1:
            section = section[0]
        if not isinstance(section, dict) or not section:
            found = "missing" if section is None else "empty" if not section else f"a {type(section).__name__}"
            raise CheckpointError(f"{origin}: MTLoRA checkpoint needs both {' and '.join(MTLORA_SECTIONS)} "
                                  f"as state dicts; {name!r} is {found}")
        sections[name] = dict(section)
    return sections


def section_tasks(section: dict, key_prefix: str) -> list[str]:
    return sorted(k.removeprefix(key_prefix) for k in section if k.startswith(key_prefix))


def check_layout(config: BackboneConfig, sections: dict, head_tasks: list[str], adapter_blocks: set[int | None],
                 origin: str) -> list[str]:
    """Fail fast (before loading weights) on a task list or block count that does not fit; returns the tasks."""
    block_tasks = section_tasks(sections["mtl_layer"], "attn.q.lora_tasks_A.")
    pool_tasks = section_tasks(sections["mtl_attn_pool"], "probe.")
    if not (sorted(head_tasks) == block_tasks == pool_tasks):
        raise CheckpointError(f"{origin}: the task lists do not match: heads {sorted(head_tasks)}, "
                              f"mtl_layer {block_tasks}, mtl_attn_pool {pool_tasks}")
    expected = set(range(config.depth - 1))
    if None in adapter_blocks or adapter_blocks != expected:
        found = sorted(b for b in adapter_blocks if b is not None) + (["attn_pool"] if None in adapter_blocks else [])
        raise CheckpointError(f"{origin}: wrong number of blocks for MTLoRA on {config.name}: the shared adapters must "
                              f"cover blocks 0..{config.depth - 2} (block {config.depth - 1} and the pool are "
                              f"mtl_layer/mtl_attn_pool), found adapters on {found}")
    return [t for t in THESIS_TASKS if t in block_tasks]


def _load(module: nn.Module, state: dict, name: str, origin: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        shapes = "size mismatch" in str(error)
        raise CheckpointError(f"{origin}: {name} does not fit {'this backbone size' if shapes else 'the thesis layout'}: "
                              f"{str(error).splitlines()[-1].strip() if shapes else error}") from None


def build_tower(config: BackboneConfig, trunk: nn.Module, sections: dict, tasks: list[str], origin: str) -> MTLoRATower:
    """The export tower from a merged trunk (all `config.depth` blocks) and the two MTLoRA sections."""
    if len(trunk.blocks) != config.depth:
        raise CheckpointError(f"{origin}: the backbone has {len(trunk.blocks)} blocks, expected {config.depth}")
    rank = sections["mtl_layer"]["attn.q.lora_tasks_A." + tasks[0]].shape[0]
    block = MTLoRABlock(config.width, config.heads, config.mlp_ratio, rank, tasks)
    _load(block, sections["mtl_layer"], "mtl_layer", origin)
    pool = MTLoRAAttentionPool(config.width, config.pool_heads, config.mlp_ratio, rank, tasks)
    _load(pool, sections["mtl_attn_pool"], "mtl_attn_pool", origin)
    pools = MergedPools({task: pool.merged_pool(task, trunk.attn_pool) for task in tasks})
    log.info("MTLoRA: %d shared blocks + a final block with %d task paths (r=%d) + %d merged attention pools",
             config.depth - 1, len(tasks), rank, len(tasks))
    return MTLoRATower(trunk, block.requires_grad_(False), pools).eval()
