"""Labelled image grids (Pillow only) for training samples, the demo and ``metrics.compare``.

Every tile is resized with nearest neighbour to one display size, so a 16x16 LR input shows
its real pixels next to 128x128 outputs; column titles (and optional row titles) are drawn
with Pillow's default font.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
BOX_COLOR = (255, 32, 32)

Box = tuple[int, int, int, int]
"""(left, top, width, height) in the pixels of the image it is drawn on."""


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _as_image(img: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"figure tiles must be HxWx3 uint8 arrays or PIL images, got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


def draw_box(img: Image.Image, box: Box, width: int = 2, color: tuple[int, int, int] = BOX_COLOR) -> Image.Image:
    """A copy of ``img`` with the rectangle ``box`` outlined."""
    out = img.copy()
    left, top, w, h = box
    ImageDraw.Draw(out).rectangle((left, top, left + w - 1, top + h - 1), outline=color, width=width)
    return out


def scale_box(box: Box, factor: float) -> Box:
    """``box`` in the pixels of an image resized by ``factor``."""
    return tuple(int(round(v * factor)) for v in box)  # type: ignore[return-value]


def grid(
    rows: Sequence[Sequence[np.ndarray | Image.Image]],
    col_titles: Sequence[str],
    row_titles: Sequence[str] | None = None,
    tile: int = 256,
    pad: int = 6,
    font_size: int | None = None,
) -> Image.Image:
    """One figure: ``rows`` of images (each resized to ``tile`` x ``tile``, nearest), titles on top.

    ``col_titles`` has one entry per column; ``row_titles`` (optional) one per row, drawn at the left.
    """
    if not rows or any(len(r) != len(col_titles) for r in rows):
        raise ValueError(
            f"every row needs {len(col_titles)} images (one per column title), got {[len(r) for r in rows]}"
        )
    if row_titles is not None and len(row_titles) != len(rows):
        raise ValueError(f"{len(row_titles)} row titles for {len(rows)} rows")
    size = font_size or max(12, tile // 12)
    font = _font(size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_width(text: str) -> int:
        return int(measure.textlength(text, font=font))

    title_h = size + 2 * pad
    left_w = max((text_width(t) for t in row_titles), default=0) + 2 * pad if row_titles else 0
    cols = len(col_titles)
    width = left_w + cols * tile + (cols + 1) * pad
    height = title_h + len(rows) * (tile + pad)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(col_titles):
        x0 = left_w + pad + c * (tile + pad)
        draw.text((x0 + (tile - text_width(title)) / 2, pad), title, fill=TEXT, font=font)
    for r, row in enumerate(rows):
        y0 = title_h + r * (tile + pad)
        if row_titles:
            draw.text((pad, y0 + (tile - size) / 2), row_titles[r], fill=TEXT, font=font)
        for c, img in enumerate(row):
            tile_img = _as_image(img).resize((tile, tile), Image.Resampling.NEAREST)
            canvas.paste(tile_img, (left_w + pad + c * (tile + pad), y0))
    return canvas


def save_figure(img: Image.Image, path: str | Path) -> Path:
    """Save a figure as PNG (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
