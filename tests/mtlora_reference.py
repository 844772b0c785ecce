"""An independent reference for the MTLoRA export tests: the thesis' MTLoRA math with
unmerged LoRA branches, in Meta's naming, sharing no code with export/ (it builds on tests/pe_reference.py).

Written as the thesis' "matrix" mode: every MTLoRA Linear takes the shared activation and one activation
per task, and returns the shared output and one output per task; the shared LoRA is computed and
multiplied by its scale 0. Also writes an MTLoRA checkpoint the way the thesis does: the Meta PE weights
file, PEFT DoRA on blocks 0..n-2 (`save_pretrained`), and `custom_layers.pt` with `prediction_layers`,
`mtl_layer` and `mtl_attn_pool` in the exact key layout of the thesis checkpoint.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from pe_reference import CLASSES, apply_rope, attach_dora, meta_state_dict, randomize, rope_angles, thesis_heads, \
    VisionTransformer
from torch import nn

SHARED_SCALE, TASK_SCALE = 0.0, 1.0  # thesis MTLoRALinear


class RefMTLoRALinear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, rank: int, tasks):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        self.linear.weight.data.copy_(weight)
        self.linear.bias.data.copy_(bias)
        self.lora_shared_A = nn.Parameter(torch.zeros(rank, weight.shape[1]))
        self.lora_shared_B = nn.Parameter(torch.zeros(weight.shape[0], rank))
        self.lora_tasks_A = nn.ParameterDict({t: nn.Parameter(torch.zeros(rank, weight.shape[1])) for t in tasks})
        self.lora_tasks_B = nn.ParameterDict({t: nn.Parameter(torch.zeros(weight.shape[0], rank)) for t in tasks})

    def forward(self, x_shared, x_tasks: dict):
        frozen = self.linear(x_shared)
        shared = frozen + SHARED_SCALE * (x_shared @ self.lora_shared_A.T @ self.lora_shared_B.T)
        tasks = {t: frozen + TASK_SCALE * (x @ self.lora_tasks_A[t].T @ self.lora_tasks_B[t].T) for t, x in x_tasks.items()}
        return shared, tasks


def attention(q, k, v, heads: int, angles=None):
    b, n, d = q.shape
    q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    if angles is not None:
        q, k = apply_rope(q, angles), apply_rope(k, angles)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)


def both(fn, shared, tasks: dict):
    return fn(shared), {t: fn(x) for t, x in tasks.items()}


class RefMTLoRABlock(nn.Module):
    """MTLoRAResidualAttentionBlock: keys attn.{q,k,v}.*, out_proj.*, ln_1.*, ln_2.*, mlp.{c_fc,c_proj}.*."""

    def __init__(self, block: nn.Module, heads: int, rank: int, tasks):
        super().__init__()
        self.heads = heads
        w, b = block.attn.in_proj.weight.detach(), block.attn.in_proj.bias.detach()
        chunks = list(zip(w.chunk(3), b.chunk(3)))  # q|k|v rows of the original block's in_proj
        self.ln_1, self.ln_2 = copy.deepcopy(block.ln_1), copy.deepcopy(block.ln_2)
        self.attn = nn.ModuleDict({p: RefMTLoRALinear(*chunks[i], rank, tasks) for i, p in enumerate("qkv")})
        self.out_proj = RefMTLoRALinear(block.attn.out_proj.weight.detach(), block.attn.out_proj.bias.detach(), rank, tasks)
        self.mlp = nn.ModuleDict({n: RefMTLoRALinear(getattr(block.mlp, n).weight.detach(), getattr(block.mlp, n).bias.detach(),
                                                     rank, tasks) for n in ("c_fc", "c_proj")})

    def forward(self, h, angles, tasks) -> dict:
        x_s, x_t = h, {t: h for t in tasks}
        n_s, n_t = both(self.ln_1, x_s, x_t)
        (q_s, q_t), (k_s, k_t), (v_s, v_t) = (self.attn[p](n_s, n_t) for p in "qkv")
        a_s = attention(q_s, k_s, v_s, self.heads, angles)
        a_t = {t: attention(q_t[t], k_t[t], v_t[t], self.heads, angles) for t in tasks}
        o_s, o_t = self.out_proj(a_s, a_t)
        x_s, x_t = x_s + o_s, {t: x_t[t] + o_t[t] for t in tasks}
        f_s, f_t = self.mlp["c_fc"](*both(self.ln_2, x_s, x_t))
        p_s, p_t = self.mlp["c_proj"](*both(F.gelu, f_s, f_t))
        return {t: x_t[t] + p_t[t] for t in tasks}  # the shared output x_s + p_s is discarded


class RefMTLoRAPool(nn.Module):
    """MTLoRAAttentionPooling: keys probe.{T}, {q,k,v,out}_proj.*, layernorm.*, mlp.{c_fc,c_proj}.*."""

    def __init__(self, pool: nn.Module, rank: int, tasks):
        super().__init__()
        self.heads = pool.attn.num_heads
        w, b = pool.attn.in_proj_weight.detach(), pool.attn.in_proj_bias.detach()
        for name, weight, bias in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3), b.chunk(3)):
            setattr(self, name, RefMTLoRALinear(weight, bias, rank, tasks))
        self.out_proj = RefMTLoRALinear(pool.attn.out_proj.weight.detach(), pool.attn.out_proj.bias.detach(), rank, tasks)
        self.probe = nn.ParameterDict({t: nn.Parameter(pool.probe.detach().clone()) for t in tasks})
        self.layernorm = copy.deepcopy(pool.layernorm)
        self.mlp = nn.ModuleDict({n: RefMTLoRALinear(getattr(pool.mlp, n).weight.detach(), getattr(pool.mlp, n).bias.detach(),
                                                     rank, tasks) for n in ("c_fc", "c_proj")})

    def forward(self, tokens: dict) -> dict:
        out = {}
        for t, x in tokens.items():
            def lin(m, v):  # shared and task input are the same tensor in the pool
                return m(v, {t: v})[1][t]
            probe = self.probe[t].expand(x.shape[0], -1, -1)
            z = lin(self.out_proj, attention(lin(self.q_proj, probe), lin(self.k_proj, x), lin(self.v_proj, x), self.heads))
            out[t] = (z + lin(self.mlp["c_proj"], F.gelu(lin(self.mlp["c_fc"], self.layernorm(z))))).squeeze(1)
        return out


def trunk_tokens(tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Meta PE up to the last kept block: conv1, CLS, positions, ln_pre, blocks (no ln_post)."""
    x = tower.conv1(x).flatten(2).transpose(1, 2)
    x = torch.cat([tower.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + tower.positional_embedding
    x = tower.ln_pre(x)
    for block in tower.transformer.resblocks:
        x = block(x, rope_angles(tower.grid, tower.head_dim))
    return x


class MTLoRAReference(nn.Module):
    """uint8 NHWC → thesis transform → DoRA-merged blocks 0..n-2 → MTLoRA block → ln_post → task pools → heads."""

    def __init__(self, trunk: nn.Module, block: RefMTLoRABlock, pool: RefMTLoRAPool, heads: nn.ModuleDict):
        super().__init__()
        self.trunk, self.block, self.pool, self.heads = trunk, block, pool, heads

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict:
        x = (images.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
        h = trunk_tokens(self.trunk, x)
        tokens = self.block(h, rope_angles(self.trunk.grid, self.trunk.head_dim), list(self.heads))
        return self.pool({t: self.trunk.ln_post(y) for t, y in tokens.items()})

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict:
        features = self.features(images)
        return {t.lower(): head(features[t]) for t, head in self.heads.items()}


class OriginalEnd(nn.Module):
    """The invariant's target: DoRA trunk → the original last block → ln_post → the original pool, no `proj`."""

    def __init__(self, trunk: nn.Module, last_block: nn.Module, pool: nn.Module):
        super().__init__()
        self.trunk, self.last_block, self.pool = trunk, last_block, pool

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
        h = self.last_block(trunk_tokens(self.trunk, x), rope_angles(self.trunk.grid, self.trunk.head_dim))
        return self.pool(self.trunk.ln_post(h))


def fill_task_loras(block: nn.Module, pool: nn.Module, tasks, mode: str, gen: torch.Generator) -> None:
    """mode 'trained': random non-zero shared and task LoRAs, probes moved; 'zero': task B = 0, probes original;
    'same': every task gets the same LoRAs and probe. The shared LoRA is always non-zero (it must not matter)."""
    with torch.no_grad():
        for module in [*block.modules(), *pool.modules()]:
            if not isinstance(module, RefMTLoRALinear):
                continue
            module.lora_shared_A.copy_(torch.randn(module.lora_shared_A.shape, generator=gen))
            module.lora_shared_B.copy_(torch.randn(module.lora_shared_B.shape, generator=gen))
            first = None
            for t in tasks:
                a = torch.randn(module.lora_tasks_A[t].shape, generator=gen) * module.lora_tasks_A[t].shape[1] ** -0.5
                b = 0.3 * torch.randn(module.lora_tasks_B[t].shape, generator=gen)
                if mode == "zero":
                    b.zero_()
                first = first or (a, b)
                module.lora_tasks_A[t].copy_(first[0] if mode == "same" else a)
                module.lora_tasks_B[t].copy_(first[1] if mode == "same" else b)
        if mode == "trained":
            for t in tasks:
                pool.probe[t].add_(0.5 * torch.randn(pool.probe[t].shape, generator=gen))


def write_mtlora_files(directory: Path, cfg: dict, tasks=tuple(CLASSES), rank: int = 4, seed: int = 0,
                       mode: str = "trained"):
    """Meta weights (all n blocks + pool), PEFT DoRA on blocks 0..n-2, custom_layers.pt with the MTLoRA sections.

    Returns (weights file, adapter dir, MTLoRAReference, OriginalEnd)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 10)
    tower = randomize(VisionTransformer(cfg["image_size"], cfg["patch_size"], cfg["width"], cfg["depth"], cfg["heads"],
                                        cfg["mlp_ratio"], cfg["pool_heads"], cfg["proj_dim"]), seed)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "PE-Core-tiny.pt"
    torch.save(meta_state_dict(tower), weights)
    last_block, original_pool = tower.transformer.resblocks[-1], tower.attn_pool
    block = RefMTLoRABlock(last_block, cfg["heads"], rank, tasks)
    pool = RefMTLoRAPool(original_pool, rank, tasks)
    fill_task_loras(block, pool, tasks, mode, gen)

    trunk = copy.deepcopy(tower)  # the thesis truncates and deletes the pool before applying PEFT
    del trunk.transformer.resblocks[-1]
    del trunk.attn_pool
    peft_model = attach_dora(trunk, rank, seed + 1)
    heads = thesis_heads(cfg["width"], cfg["head_hidden"], tasks, seed=seed + 2)  # no proj: heads read the width
    adapters = directory / "adapters"
    peft_model.save_pretrained(str(adapters))
    torch.save({"prediction_layers": heads.state_dict(), "mtl_layer": block.state_dict(),
                "mtl_attn_pool": pool.state_dict()}, adapters / "custom_layers.pt")
    trunk = peft_model.merge_and_unload().eval()
    return weights, adapters, MTLoRAReference(trunk, block, pool, heads).eval(), \
        OriginalEnd(trunk, last_block, original_pool).eval()
