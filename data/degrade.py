"""HR fitting and the x``scale`` bicubic degradation (SPARNet-lineage protocol).

HR: centre-crop to a square then resize, or resize the whole image, to ``size`` x ``size``
with PIL bicubic. LR: bicubic down by ``scale`` (``lr_small``), then bicubic back up to the HR
size (``lr``, the network input), both quantised to uint8 like saved PNGs. ``kernel="pil"``
uses Pillow's antialiased bicubic (the published protocol); ``kernel="matlab"`` uses
:func:`data.imresize.imresize` (MATLAB ``imresize``, as in BasicSR-style datasets).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from data.imresize import imresize

BICUBIC = Image.Resampling.BICUBIC
FITS = ("center_crop", "resize")
KERNELS = ("pil", "matlab")


def fit_hr(img: Image.Image, size: int, fit: str = "center_crop") -> Image.Image:
    """``size`` x ``size`` HR image: central square crop (``center_crop``) or plain ``resize``."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {list(FITS)}, got {fit!r}")
    w, h = img.size
    if fit == "center_crop" and w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), BICUBIC)
    return img


def resize(img: Image.Image, size: tuple[int, int], kernel: str = "pil") -> Image.Image:
    """Bicubic resize of an RGB image to ``size`` = (width, height) with the chosen kernel."""
    if kernel == "pil":
        return img.resize(size, BICUBIC)
    if kernel == "matlab":
        return Image.fromarray(imresize(np.asarray(img), output_shape=(size[1], size[0])))
    raise ValueError(f"resize kernel must be one of {list(KERNELS)}, got {kernel!r}")


def degrade(hr: Image.Image, scale: int, kernel: str = "pil") -> tuple[Image.Image, Image.Image]:
    """(lr_small, lr): bicubic down by ``scale`` and back up to the HR size."""
    w, h = hr.size
    if w % scale or h % scale:
        raise ValueError(f"HR size {w}x{h} is not divisible by the scale {scale}")
    small = resize(hr, (w // scale, h // scale), kernel)
    return small, resize(small, (w, h), kernel)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 RGB PIL image -> float tensor (3, H, W) in [0, 1]."""
    chw = np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1), dtype=np.float32)
    chw /= 255.0
    return torch.from_numpy(chw)
