"""Built-in demo face set: deterministic jittered face crops of scikit-image's astronaut photo.

``skimage.data.astronaut()`` is NASA's portrait of Eileen Collins, released into the public
domain ("No known copyright restrictions"), and ships with scikit-image, so the set needs no
download and no committed image files. It is a demo set for smoke runs on a fresh machine,
not a benchmark: every crop shows the same face.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Face box of the 512x512 astronaut image (hair to chin, ear to ear): centre and side, pixels.
FACE_CENTER = (225.0, 108.0)  # (x, y)
FACE_SIDE = 190.0
JITTER = 12.0  # +- pixels of centre shift
SIDE_RANGE = (0.9, 1.15)  # relative crop side
SEEDS = {"train": 20240, "val": 20241}


def _astronaut() -> np.ndarray:
    from skimage.data import astronaut  # scikit-image is slow to import; only the demo set needs it

    return astronaut()


def face_crops(count: int, split: str = "train") -> list[Image.Image]:
    """``count`` square crops around the astronaut's face, the same on every call for a split."""
    if split not in SEEDS:
        raise ValueError(f"sample split must be one of {list(SEEDS)}, got {split!r}")
    image = Image.fromarray(_astronaut())
    width, height = image.size
    rng = np.random.default_rng(SEEDS[split])
    crops = []
    for _ in range(count):
        dx, dy = rng.uniform(-JITTER, JITTER, size=2)
        side = int(round(FACE_SIDE * rng.uniform(*SIDE_RANGE)))
        left = int(np.clip(round(FACE_CENTER[0] + dx - side / 2), 0, width - side))
        top = int(np.clip(round(FACE_CENTER[1] + dy - side / 2), 0, height - side))
        crops.append(image.crop((left, top, left + side, top + side)))
    return crops
