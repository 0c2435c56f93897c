"""Training augmentation of the HR image: random horizontal flip and random scale.

Random numbers come from torch's global generator (``torch.rand`` / ``torch.randint``), which
DataLoader seeds per worker from its base seed, so a seeded run draws the same augmentation
again (needed for exact resume). Random scale ``s ~ U(scale_range)`` (seeds: [1.0, 1.3]):
the HR image is resized by ``s`` with PIL bicubic; when it grew it is randomly cropped back to
its size (a zoom-in), when it shrank it is centred and reflect-padded back (a zoom-out, no
black borders), when ``round(size * s) == size`` it is left unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

BICUBIC = Image.Resampling.BICUBIC
MIN_SCALE = 0.5


def check_scale_range(scale_range: Sequence[float], key: str = "scale_range") -> tuple[float, float]:
    """Validate ``[low, high]`` with ``0.5 <= low <= high``; returns it as floats."""
    ok = (
        isinstance(scale_range, (list, tuple))
        and len(scale_range) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale_range)
    )
    if not ok or not MIN_SCALE <= scale_range[0] <= scale_range[1]:
        raise ValueError(f"{key} must be [low, high] with {MIN_SCALE} <= low <= high, got {scale_range!r}")
    return float(scale_range[0]), float(scale_range[1])


def random_scale(img: Image.Image, low: float, high: float) -> Image.Image:
    """Zoom a square image by ``s ~ U(low, high)`` keeping its size (crop or reflect-pad)."""
    size = img.size[0]
    s = low + (high - low) * torch.rand(()).item()
    new = round(size * s)
    if new == size:
        return img
    img = img.resize((new, new), BICUBIC)
    if new > size:
        top, left = (int(v) for v in torch.randint(0, new - size + 1, (2,)))
        return img.crop((left, top, left + size, top + size))
    before = (size - new) // 2
    after = size - new - before
    return Image.fromarray(np.pad(np.asarray(img), ((before, after), (before, after), (0, 0)), mode="reflect"))


class HRAugment:
    """Random horizontal flip (p = 0.5) then random scale, on the square HR PIL image."""

    def __init__(self, flip: bool = True, scale: bool = True, scale_range: Sequence[float] = (1.0, 1.3)):
        self.flip = flip
        self.scale = scale
        self.low, self.high = check_scale_range(scale_range)

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.flip and torch.rand(()).item() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.scale:
            img = random_scale(img, self.low, self.high)
        return img

    def __repr__(self) -> str:
        return f"HRAugment(flip={self.flip}, scale={self.scale}, scale_range=[{self.low}, {self.high}])"
