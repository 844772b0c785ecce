"""An independent reference for the export tests: PE's vision tower in Meta's own module naming.

Written from Meta's PE (github.com/facebookresearch/perception_models), sharing no code with
export/ and not using timm, so the ONNX parity check is not circular. Also writes checkpoint files
the way the thesis and Meta do (PEFT `save_pretrained`, `custom_layers.pt`, Meta-layout weights).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn

THESIS_TARGETS = ["in_proj", "out_proj", "c_fc", "c_proj"]  # as PEFT saved them
CLASSES = {"Age": 9, "Gender": 2, "Emotion": 7}


def rope_angles(grid: int, head_dim: int) -> torch.Tensor:
    """[1 + grid², head_dim] angles: CLS 0; per patch [x·f (interleaved), y·f (interleaved)], positions 1..grid."""
    axis_dim = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, axis_dim, 2).float() / axis_dim))
    freqs = freqs.repeat_interleave(2)  # f0 f0 f1 f1 …
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")  # tokens row-major
    x_angles = (xs.reshape(-1, 1).float() + 1) * freqs
    y_angles = (ys.reshape(-1, 1).float() + 1) * freqs
    patches = torch.cat([x_angles, y_angles], dim=1)
    return torch.cat([torch.zeros(1, head_dim), patches], dim=0)


def apply_rope(t: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    pairs = t.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return t * angles.cos() + rotated * angles.sin()


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(width, 3 * width)  # the thesis' migrated layout: q|k|v rows
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.in_proj(x).chunk(3, dim=-1))
        q, k = apply_rope(q, angles), apply_rope(k, angles)
        return self.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


def mlp(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(c_fc=nn.Linear(width, hidden), gelu=nn.GELU(), c_proj=nn.Linear(hidden, width)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(width), SelfAttention(width, heads)
        self.ln_2, self.mlp = nn.LayerNorm(width), mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), angles)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(depth))


class AttentionPooling(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, width))
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width)
        self.mlp = mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.probe.expand(x.shape[0], -1, -1), x, x, need_weights=False)[0]
        return (x + self.mlp(self.layernorm(x))).squeeze(1)  # no residual from the probe


class VisionTransformer(nn.Module):
    """Meta's PE vision tower: `backbone(x)` is the projected embedding (attn-pool output @ proj)."""

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, heads: int, mlp_ratio: float,
                 pool_heads: int, output_dim: int):
        super().__init__()
        self.grid, self.head_dim = image_size // patch_size, width // heads
        self.conv1 = nn.Conv2d(3, width, patch_size, patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.positional_embedding = nn.Parameter(torch.randn(self.grid**2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, depth, heads, mlp_ratio)
        self.ln_post = nn.LayerNorm(width)
        self.attn_pool = AttentionPooling(width, pool_heads, mlp_ratio)
        self.proj = nn.Parameter(torch.randn(width, output_dim) * width**-0.5)

    def positions(self, grid: int) -> torch.Tensor:
        """Meta's `_sample_abs_posemb`: at another grid, bilinear (align_corners=False), CLS entry kept."""
        if grid == self.grid:
            return self.positional_embedding
        patches = self.positional_embedding[1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid, grid), mode="bilinear", align_corners=False)
        return torch.cat([self.positional_embedding[:1], patches.permute(0, 2, 3, 1).reshape(grid * grid, -1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        grid = x.shape[-1]  # Meta's PE runs at any input size: positions follow the grid (RoPE never rescaled)
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positions(grid)
        x = self.ln_pre(x)
        angles = rope_angles(grid, self.head_dim)
        for block in self.transformer.resblocks:
            x = block(x, angles)
        return self.attn_pool(self.ln_post(x)) @ self.proj


def thesis_heads(dim: int, hidden: int | None, tasks=tuple(CLASSES), batch_norm: bool = True, seed: int = 0):
    """The thesis heads with non-trivial BatchNorm statistics (deep when `hidden` is given)."""
    gen = torch.Generator().manual_seed(seed)
    heads = nn.ModuleDict()
    for task in tasks:
        layers = [nn.BatchNorm1d(dim) if batch_norm else nn.Identity(), nn.Dropout(0.5)]
        layers += [nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, CLASSES[task])] if hidden else \
                  [nn.Linear(dim, CLASSES[task])]
        head = nn.Sequential(*layers)
        if batch_norm:
            head[0].running_mean.copy_(torch.randn(dim, generator=gen) * 0.3)
            head[0].running_var.copy_(torch.rand(dim, generator=gen) + 0.5)
            head[0].weight.data.copy_(1 + 0.2 * torch.randn(dim, generator=gen))
            head[0].bias.data.copy_(0.1 * torch.randn(dim, generator=gen))
            head[0].num_batches_tracked.fill_(100)
        heads[task] = head
    return heads.eval()


class ThesisPipeline(nn.Module):
    """uint8 NHWC crops → thesis transform ((x/255 − 0.5)/0.5) → merged tower → heads (dict of logits)."""

    def __init__(self, tower: nn.Module, heads: nn.ModuleDict):
        super().__init__()
        self.tower, self.heads = tower, heads

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (images.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
        feature = self.tower(x)
        return {task.lower(): head(feature) for task, head in self.heads.items()}


def randomize(tower: nn.Module, seed: int) -> nn.Module:
    """Non-trivial weights everywhere (LayerNorm affine too), so every mapped tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1 and "ln" in name or "layernorm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (p.shape[-1] if p.ndim > 1 else 1) ** -0.5)
    return tower.eval()


def attach_dora(tower: nn.Module, rank: int, seed: int, use_dora: bool = True, alpha: int | None = None):
    """PEFT with the thesis LoraConfig (alpha = r unless given), then non-zero B and perturbed magnitudes."""
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, use_dora=use_dora, lora_dropout=0.5, bias="none",
                        target_modules=THESIS_TARGETS)
    model = get_peft_model(tower, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def meta_state_dict(tower: nn.Module, prefix: str = "visual.", migrated: bool = True,
                    text_stub: bool = True) -> dict[str, torch.Tensor]:
    """Meta's layout: a whole CLIP checkpoint (vision under `visual.`, text tower beside it), or vision only.

    `migrated` keeps the thesis' `attn.in_proj.weight`; otherwise upstream's `attn.in_proj_weight`.
    """
    state = {}
    for key, value in tower.state_dict().items():
        if not migrated:
            key = key.replace("attn.in_proj.weight", "attn.in_proj_weight").replace("attn.in_proj.bias",
                                                                                   "attn.in_proj_bias")
        state[prefix + key] = value.clone()
    if text_stub:
        width = tower.class_embedding.shape[0]
        state.update({"positional_embedding": torch.randn(8, width), "token_embedding.weight": torch.randn(16, width),
                      "transformer.resblocks.0.attn.in_proj_weight": torch.randn(3 * width, width),
                      "ln_final.weight": torch.ones(width), "text_projection": torch.randn(width, width),
                      "logit_scale": torch.tensor(4.6)})
    return state


def save_thesis_checkpoint(directory: Path, peft_model, heads: nn.ModuleDict) -> Path:
    """As the thesis' save_adapters_peft: PEFT save_pretrained, then custom_layers.pt."""
    directory.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(directory))
    torch.save({"prediction_layers": heads.state_dict()}, directory / "custom_layers.pt")
    return directory


def tiny_config(path: Path) -> dict:
    """The tiny backbone's settings, read as plain data from its YAML file."""
    import yaml

    return yaml.safe_load(path.read_text())


def write_thesis_files(directory: Path, cfg: dict, tasks=tuple(CLASSES), rank: int = 4, seed: int = 0,
                       deep: bool = True, use_dora: bool = True, alpha: int | None = None):
    """Meta-layout weights, thesis-layout adapters and heads; returns (weights, adapter dir, reference)."""
    torch.manual_seed(seed)
    tower = randomize(VisionTransformer(cfg["image_size"], cfg["patch_size"], cfg["width"], cfg["depth"], cfg["heads"],
                                        cfg["mlp_ratio"], cfg["pool_heads"], cfg["proj_dim"]), seed)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "PE-Core-tiny.pt"
    torch.save(meta_state_dict(tower), weights)  # before PEFT wraps the Linears
    peft_model = attach_dora(tower, rank, seed + 1, use_dora, alpha)
    heads = thesis_heads(cfg["proj_dim"], cfg["head_hidden"] if deep else None, tasks, seed=seed + 2)
    adapters = save_thesis_checkpoint(directory / "adapters", peft_model, heads)
    reference = ThesisPipeline(peft_model.merge_and_unload(), heads).eval()
    return weights, adapters, reference
