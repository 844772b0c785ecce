"""Backbone configurations: data in `configs/models/<name>.yaml`, one small dataclass in code."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime import configfile

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "models"


class ConfigError(ValueError):
    """A backbone configuration is missing or malformed."""


@dataclass(frozen=True)
class BackboneConfig:
    name: str
    timm_name: str            # timm model function (`vit_pe_core_*`) whose class and defaults are used
    pretrained_tag: str | None  # timm pretrained tag (`fb`), None when no weights are published
    image_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp_ratio: float
    pool_heads: int
    proj_dim: int             # the projected embedding (Meta's `proj`, timm's `head`) the heads consume
    head_hidden: int          # deep-head hidden size used when random heads are made

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def pretrained_name(self) -> str | None:
        return f"{self.timm_name}.{self.pretrained_tag}" if self.pretrained_tag else None


def available_backbones() -> list[str]:
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def load_backbone_config(name_or_path: str | Path) -> BackboneConfig:
    """A config by name (`pe-core-l14-336`) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown backbone {str(name_or_path)!r}; known: {', '.join(available_backbones())}")
    data = configfile.read_yaml(path, ConfigError)
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    config = configfile.from_dict(BackboneConfig, data, str(path), ConfigError)  # every key, checked by type
    head_dim = config.width // config.heads
    if config.width % config.heads or head_dim % 4 or config.image_size % config.patch_size:
        raise ConfigError(
            f"{path}: width/heads must give a head size divisible by 4 (2-D RoPE) and image_size must be a "
            f"multiple of patch_size (width {config.width}, heads {config.heads}, image {config.image_size}, "
            f"patch {config.patch_size})"
        )
    return config
