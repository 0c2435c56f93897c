"""HR fitting and the x``scale`` bicubic degradation (SPARNet-lineage protocol).

HR: centre-crop to a square then resize, or resize the whole image, to ``size`` x ``size``
with PIL bicubic (``FIT_REGISTRY``). LR: bicubic down by ``scale`` (``lr_small``), then bicubic back
up to the HR size (``lr``, the network input), both quantised to uint8 like saved PNGs. The kernels
(``RESIZE_KERNEL_REGISTRY``): ``pil`` is Pillow's antialiased bicubic (the published protocol);
``matlab`` is :func:`data.imresize.imresize` (MATLAB ``imresize``, as in BasicSR-style datasets).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from data.imresize import imresize
from utils.registry import FIT_REGISTRY, RESIZE_KERNEL_REGISTRY

BICUBIC = Image.Resampling.BICUBIC
FITS = FIT_REGISTRY  # the names: a Registry iterates and tests membership like a tuple (argparse choices)
KERNELS = RESIZE_KERNEL_REGISTRY


@FIT_REGISTRY.register("center_crop")
def center_square(img: Image.Image) -> Image.Image:
    """The central square of ``img``."""
    w, h = img.size
    if w == h:
        return img
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


@FIT_REGISTRY.register("resize")
def whole_image(img: Image.Image) -> Image.Image:
    """``img`` as it is (the resize follows)."""
    return img


def fit_hr(img: Image.Image, size: int, fit: str = "center_crop") -> Image.Image:
    """``size`` x ``size`` HR image: central square crop (``center_crop``) or plain ``resize``."""
    if fit not in FIT_REGISTRY:
        raise ValueError(f"fit must be one of {list(FIT_REGISTRY)}, got {fit!r}")
    img = FIT_REGISTRY.get(fit)(img)
    if img.size != (size, size):
        img = img.resize((size, size), BICUBIC)
    return img


@RESIZE_KERNEL_REGISTRY.register("pil")
def resize_pil(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Pillow's antialiased bicubic."""
    return img.resize(size, BICUBIC)


@RESIZE_KERNEL_REGISTRY.register("matlab")
def resize_matlab(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """MATLAB ``imresize`` bicubic (:mod:`data.imresize`)."""
    return Image.fromarray(imresize(np.asarray(img), output_shape=(size[1], size[0])))


def resize(img: Image.Image, size: tuple[int, int], kernel: str = "pil") -> Image.Image:
    """Bicubic resize of an RGB image to ``size`` = (width, height) with the chosen kernel."""
    if kernel not in RESIZE_KERNEL_REGISTRY:
        raise ValueError(f"resize kernel must be one of {list(RESIZE_KERNEL_REGISTRY)}, got {kernel!r}")
    return RESIZE_KERNEL_REGISTRY.get(kernel)(img, size)


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
