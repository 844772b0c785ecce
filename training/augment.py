"""The thesis' train augmentations with torchvision v2, on uint8 CHW crops.

HorizontalFlip → ColorJitter(0.2, 0.2, 0.2) → RandomAffine(10°, translate 0.05, scale 0.9–1.1) →
RandomErasing(p 0.5, scale 0.02–0.2). The thesis erased after normalising with value 0, i.e. mid-grey;
on uint8 that is 128. Resizing is not here: crops already have the model's size, and the model
normalises inside (export/model.py Preprocess), so training sees exactly what export and runtime see.
"""
from __future__ import annotations

from torchvision.transforms import v2

from training.config import AugmentConfig


def train_transform(config: AugmentConfig):
    if not config.enabled:
        return None
    jitter = config.color_jitter
    return v2.Compose([
        v2.RandomHorizontalFlip(config.hflip),
        v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
        v2.RandomAffine(degrees=config.rotate_degrees, translate=(config.translate, config.translate), scale=config.scale),
        v2.RandomErasing(p=config.erasing_p, scale=config.erasing_scale, value=128),
    ])
