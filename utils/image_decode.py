"""Decoding image files to 8-bit RGB: the one mode policy of training data, ``test.py`` and the metric scripts.

RGB is used as stored; grayscale (L, 1), palette (P), CMYK and YCbCr are converted to RGB by
Pillow; images with transparency (RGBA, LA, PA, palette with a transparent colour) are
composited over white; 16-bit images (grey ``I;16*``, ``I`` within 0..65535, 48-bit RGB PNG) are
scaled to 8 bits with ``round(v / 257)`` = ``round(v * 255 / 65535)`` (Pillow alone clips grey
to 255 and keeps only the high byte of RGB). 16-bit images with alpha, float images (F) and 32-bit
values above 65535 are refused. EXIF orientation (tag 274, set by phone cameras) is applied, so
a face comes out upright as every image viewer shows it (``cv2.imread`` does the same); a file
whose header declares more pixels than Pillow's decompression-bomb limit is refused before
decoding. numpy and Pillow only (no torch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
ORIENTATION_TAG = 0x0112
_UPRIGHT = {  # EXIF orientation -> how the stored HxWxC array is turned upright
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: a.swapaxes(0, 1)[::-1],
}
_RGB16 = {"RGB;16B": "RGB;16L", "RGB;16L": "RGB;16B"}  # rawmode of the high byte -> rawmode of the low byte


class ImageModeError(ValueError):
    """An image whose pixel format the policy refuses; the message names the file."""


def _scale16(values: np.ndarray) -> np.ndarray:
    """0..65535 integers -> uint8 with round(v / 257) (exact: v / 257 is never a tie)."""
    return np.floor(values.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)


def _rgb16(path: Path) -> np.ndarray | None:
    """A 48-bit RGB file scaled to uint8, or None when the file is not one.

    Pillow decodes such files as 8-bit RGB keeping the high byte of each sample; decoding the
    same data a second time with the byte-swapped raw mode gives the low bytes.
    """
    halves = []
    for swap in (False, True):
        with Image.open(path) as img:
            if img.mode != "RGB" or len(img.tile) != 1 or img.tile[0].args not in _RGB16:
                return None
            if swap:
                img.tile = [img.tile[0]._replace(args=_RGB16[img.tile[0].args])]
            img.load()
            halves.append(np.asarray(img, dtype=np.uint16))
    return _scale16(halves[0] * 256 + halves[1])


def _to_rgb(img: Image.Image, path: Path, note: Callable[[str], None]) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageModeError(f"image {str(path)!r} has 32-bit pixels outside 0..65535; expected 8 or 16 bits")
        note("16-bit")
        return np.repeat(_scale16(arr)[..., None], 3, axis=2)
    if mode == "F":
        raise ImageModeError(f"image {str(path)!r} has floating-point pixels (mode F); expected an 8- or 16-bit image")
    if any(str(getattr(tile, "args", "")).endswith(";16B") for tile in img.tile):
        raise ImageModeError(
            f"image {str(path)!r} is a 16-bit image with alpha ({mode}); save it as 8- or 16-bit RGB without alpha"
        )
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        note(f"{mode} (alpha composited on white)")
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    else:
        note(mode)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 (as stored) when absent or unreadable."""
    try:
        value = img.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block: the pixels as stored
        return 1
    return value if value in _UPRIGHT else 1


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) once the EXIF orientation is applied (from the header only)."""
    w, h = img.size
    return (h, w) if orientation(img) >= 5 else (w, h)


def decode_rgb(path: str | Path, note: Callable[[str], None] | None = None) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array; ``note(kind)`` hears of every conversion made.

    Raises FileNotFoundError for a missing file, :class:`ImageModeError` for a refused pixel format
    and ValueError for a file that cannot be decoded, each naming the file.
    """
    path = Path(path)
    note = note or (lambda kind: None)
    try:
        with Image.open(path) as img:
            turn = orientation(img)
        rgb = _rgb16(path)
        if rgb is not None:
            note("16-bit RGB")
        else:
            with Image.open(path) as img:
                img.load()
                rgb = _to_rgb(img, path, note)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {str(path)!r} does not exist") from None
    except Image.DecompressionBombError as err:
        raise ValueError(f"image file {str(path)!r} was not decoded: {bomb_reason(err)}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image file {str(path)!r}: {err}") from None
    if turn == 1:
        return rgb
    note(f"EXIF orientation {turn} (turned upright)")
    return np.ascontiguousarray(_UPRIGHT[turn](rgb))


def bomb_reason(err: Image.DecompressionBombError) -> str:
    """Pillow's decompression-bomb refusal in a few words (the declared size against the limit)."""
    pixels = str(err).split("(", 1)[-1].split(" pixels)", 1)[0]
    return (
        f"its header declares {pixels} pixels, above Pillow's decompression-bomb limit of {2 * Image.MAX_IMAGE_PIXELS}"
    )
