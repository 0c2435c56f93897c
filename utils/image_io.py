"""Image files: listing, pairing by file stem, header checks and decoding to 8-bit RGB, with errors that name
the file. The one module for training data (``data``), ``test.py``, the metric scripts and the tools.

Decoding (:func:`decode_rgb`; :func:`read_rgb` as an array, :func:`read_rgb_image` as a PIL image):
RGB is used as stored; grayscale (L, 1), palette (P), CMYK and YCbCr are converted to RGB by
Pillow; images with transparency (RGBA, LA, PA, palette with a transparent colour) are
composited over white; 16-bit images (grey ``I;16*``, ``I`` within 0..65535, 48-bit RGB PNG) are
scaled to 8 bits with ``round(v / 257)`` = ``round(v * 255 / 65535)`` (Pillow alone clips grey
to 255 and keeps only the high byte of RGB). 16-bit images with alpha, float images (F) and 32-bit
values above 65535 are refused. EXIF orientation (tag 274, set by phone cameras) is applied, so
a face comes out upright as every image viewer shows it (``cv2.imread`` does the same); a file
whose header declares more pixels than Pillow's decompression-bomb limit is refused before
decoding. Each kind of conversion is told once per process (logged, or where the caller says).

Listing and pairing: image files directly inside a folder (not recursive, hidden files ignored,
extensions any case), paired by file stem; two files with one stem or unmatched names are errors.
The header check (:func:`open_header`) also reads the last bytes of PNG and JPEG files: a file that
stops before its end marker (IEND / EOI) is reported as truncated before any training.
numpy and Pillow only (no torch).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
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
END_MARKERS = {"PNG": b"IEND", "JPEG": b"\xff\xd9"}
_TAIL_BYTES = 64
_MAX_LISTED = 10

log = logging.getLogger(__name__)
_told: set[str] = set()  # the kinds of conversion told so far (once per process)


class DataError(ValueError):
    """A data folder or image file that cannot be used; the message names it."""


class NotFoundError(DataError, FileNotFoundError):
    """A folder or image file that does not exist (both a DataError and a FileNotFoundError)."""


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


def _tell_once(kind: str, path: str | Path, tell: Callable[[str], None] | None) -> None:
    if kind not in _told:
        _told.add(kind)
        message = f"converting {kind} images to 8-bit RGB (first one: {path})"
        if tell is None:
            log.info(message)
        else:
            tell(message)


def read_rgb(path: str | Path, tell: Callable[[str], None] | None = None) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array (the policy above); DataError naming the file.

    Each kind of conversion is told once per process: logged at INFO, or passed to ``tell(message)``.
    """
    try:
        return decode_rgb(path, note=lambda kind: _tell_once(kind, path, tell))
    except FileNotFoundError as err:
        raise NotFoundError(str(err)) from None
    except (OSError, ValueError) as err:
        raise DataError(str(err)) from None


def read_rgb_image(path: str | Path) -> Image.Image:
    """:func:`read_rgb` as an RGB PIL image (the training data's degradations work on PIL images)."""
    return Image.fromarray(read_rgb(path))


def list_images(folder: str | Path, what: str = "image folder") -> list[Path]:
    """Image files directly inside ``folder`` (not recursive, hidden files ignored), sorted by name; ``what``
    names the folder in errors ("LR folder", "data.train.hr_dir")."""
    folder = Path(folder)
    if not folder.exists():
        raise NotFoundError(f"{what} {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotFoundError(f"{what} {str(folder)!r} is not a directory")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )
    if not files:
        raise DataError(
            f"{what} {str(folder)!r} contains no images; accepted extensions (any case): {', '.join(IMAGE_EXTENSIONS)}"
        )
    return files


def _few(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def index_by_stem(files: list[Path], what: str) -> dict[str, Path]:
    """{stem: path}; two files with the same stem (a.png, a.jpg) are an error."""
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise DataError(f"{what} has two files with the stem {f.stem!r}: {out[f.stem].name} and {f.name}")
        out[f.stem] = f
    return out


def images_by_stem(folder: str | Path, role: str) -> dict[str, Path]:
    """{stem: path} for the images of ``folder``, the ``role`` folder ("ground-truth", "LR") in errors."""
    return index_by_stem(list_images(folder, f"{role} folder"), f"{role} folder {str(folder)!r}")


def pair_by_stem(
    first: list[Path], second: list[Path], *, roles: tuple[str, str], folders: tuple[str | Path, str | Path]
) -> list[tuple[Path, Path]]:
    """Pair two lists of files by stem (extension-insensitive), sorted by stem; unmatched names are an error.

    ``roles`` ("LR", "HR") and ``folders`` name the two sides in errors.
    """
    (role_a, role_b), (dir_a, dir_b) = roles, (str(folders[0]), str(folders[1]))
    a = index_by_stem(first, f"{role_a} folder {dir_a!r}")
    b = index_by_stem(second, f"{role_b} folder {dir_b!r}")
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    if only_a or only_b:
        raise DataError(
            f"{role_a} folder {dir_a!r} and {role_b} folder {dir_b!r} do not pair by file name: "
            f"{len(only_a)} {role_a} name(s) without {role_b} [{_few(only_a)}]; "
            f"{len(only_b)} {role_b} name(s) without {role_a} [{_few(only_b)}]"
        )
    return [(a[s], b[s]) for s in sorted(a)]


def pair_folders(
    first: str | Path, second: str | Path, roles: tuple[str, str] = ("prediction", "ground-truth")
) -> list[tuple[Path, Path]]:
    """The images of two folders paired by stem (:func:`pair_by_stem`), sorted by stem."""
    files = [list_images(folder, f"{role} folder") for folder, role in zip((first, second), roles)]
    return pair_by_stem(files[0], files[1], roles=roles, folders=(first, second))


def check_same_size(a: np.ndarray, b: np.ndarray, a_name: str = "prediction", b_name: str = "ground truth") -> None:
    """Raise if two HxWxC arrays differ in shape, naming both and their WxH sizes."""
    if a.shape != b.shape:
        raise DataError(
            f"size mismatch: {a_name} is {a.shape[1]}x{a.shape[0]} but {b_name} is "
            f"{b.shape[1]}x{b.shape[0]} (width x height)"
        )


def read_pair(first: Path, second: Path, tell: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Both images of a pair as uint8 RGB arrays (:func:`read_rgb`); different sizes are an error naming both."""
    a, b = read_rgb(first, tell), read_rgb(second, tell)
    check_same_size(a, b, str(first), str(second))
    return a, b


def _check_complete(path: Path, fmt: str | None) -> None:
    """PNG / JPEG: the end marker must be among the last bytes; a file without it must decode
    (data appended after the image, as some cameras do), else it was cut short."""
    marker = END_MARKERS.get(fmt or "")
    if marker is None:
        return
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - _TAIL_BYTES))
            if marker in fh.read():
                return
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(
            f"image {str(path)!r} is truncated: the {fmt} file stops before its end marker ({err})"
        ) from None


def open_header(path: Path) -> tuple[int, int]:
    """Upright (width, height) from the file header (no pixel decoding); DataError when not an image, truncated
    or declaring more pixels than Pillow's decompression-bomb limit."""
    try:
        with Image.open(path) as img:
            size, fmt = upright_size(img), img.format
    except Image.DecompressionBombError as err:
        raise DataError(f"image {str(path)!r} was not decoded: {bomb_reason(err)}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"cannot read image {str(path)!r}: {err}") from None
    _check_complete(path, fmt)
    return size


def check_min_size(path: Path, size: tuple[int, int], minimum: tuple[int, int], key: str) -> None:
    """Error naming ``path`` when its (width, height) is below ``minimum`` (set by config ``key``)."""
    if size[0] < minimum[0] or size[1] < minimum[1]:
        raise DataError(
            f"image {str(path)!r} is {size[0]}x{size[1]} (WxH), smaller than the minimum "
            f"{minimum[0]}x{minimum[1]} required by {key}"
        )


def scan(
    files: list[Path],
    *,
    minimum: tuple[int, int] | None,
    key: str,
    skip_bad: bool,
    skip_hint: str,
    what: str,
    limit: int | None = None,
) -> tuple[list[Path], list[tuple[int, int]]]:
    """Check each file's header (cheap: no decoding) and size; with ``skip_bad`` drop bad ones.

    Returns the kept files (at most ``limit``, in order) and their (width, height). Truncated
    pixel data is only found when an item is decoded (see the datasets' skip_bad handling).
    """
    kept, sizes, bad = [], [], []
    for f in files:
        if limit is not None and len(kept) >= limit:
            break
        try:
            size = open_header(f)
            if minimum is not None:
                check_min_size(f, size, minimum, key)
        except DataError as err:
            if not skip_bad:
                raise DataError(f"{err} ({skip_hint} to skip bad files)") from None
            bad.append((f, str(err)))
            continue
        kept.append(f)
        sizes.append(size)
    if bad:
        log.warning(
            "skipped %d bad file(s) of %d in %s: %s",
            len(bad),
            len(kept) + len(bad),
            what,
            "; ".join(msg for _, msg in bad[:_MAX_LISTED]),
        )
    if not kept:
        raise DataError(f"{what}: all {len(files)} image file(s) are unreadable or too small")
    return kept, sizes


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
