"""Listing, pairing and decoding image files, with errors that name the file.

Image modes follow the one policy of :mod:`utils.image_decode` (shared with ``test.py`` and the
metric scripts): grey, palette, CMYK, YCbCr converted; transparency composited over white; 16-bit
images scaled with ``round(v / 257)``, never clipped; 16-bit with alpha, float and out-of-range
32-bit images refused. Each kind of conversion is logged once per process.

The header check (:func:`open_header`) also reads the last bytes of PNG and JPEG files: a file
that stops before its end marker (IEND / EOI) is reported as truncated before any training.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from utils.image_decode import IMAGE_EXTENSIONS, bomb_reason, decode_rgb, upright_size

log = logging.getLogger(__name__)

_MAX_LISTED = 10
_logged_conversions: set[str] = set()


class DataError(ValueError):
    """A data folder or image file that cannot be used; the message names it."""


def _note_once(kind: str, path: str | Path) -> None:
    if kind not in _logged_conversions:
        _logged_conversions.add(kind)
        log.info("converting %s images to 8-bit RGB (first one: %s)", kind, path)


def list_images(folder: str | Path, what: str = "image folder") -> list[Path]:
    """Image files directly inside ``folder`` (not recursive, hidden files ignored), sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{what} {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise DataError(f"{what} {str(folder)!r} is not a directory")
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


def pair_by_stem(lr_files: list[Path], hr_files: list[Path], lr_dir: str, hr_dir: str) -> list[tuple[Path, Path]]:
    """Pair LR and HR files by file stem (extension-insensitive); unmatched names are an error."""
    lr = index_by_stem(lr_files, f"LR folder {lr_dir!r}")
    hr = index_by_stem(hr_files, f"HR folder {hr_dir!r}")
    lr_only, hr_only = set(lr) - set(hr), set(hr) - set(lr)
    if lr_only or hr_only:
        raise DataError(
            f"LR folder {lr_dir!r} and HR folder {hr_dir!r} do not pair by file name: "
            f"{len(lr_only)} LR name(s) without HR [{_few(lr_only)}]; "
            f"{len(hr_only)} HR name(s) without LR [{_few(hr_only)}]"
        )
    return [(lr[s], hr[s]) for s in sorted(lr)]


END_MARKERS = {"PNG": b"IEND", "JPEG": b"\xff\xd9"}
_TAIL_BYTES = 64


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


def read_rgb(path: str | Path) -> Image.Image:
    """Decode an image file to an 8-bit RGB PIL image (mode policy: :mod:`utils.image_decode`)."""
    try:
        return Image.fromarray(decode_rgb(path, note=lambda kind: _note_once(kind, path)))
    except (OSError, ValueError) as err:
        raise DataError(str(err)) from None


def check_min_size(path: Path, size: tuple[int, int], minimum: tuple[int, int], key: str) -> None:
    """Error naming ``path`` when its (width, height) is below ``minimum`` (set by config ``key``)."""
    if size[0] < minimum[0] or size[1] < minimum[1]:
        raise DataError(
            f"image {str(path)!r} is {size[0]}x{size[1]} (WxH), smaller than the minimum "
            f"{minimum[0]}x{minimum[1]} required by {key}"
        )


def scan(
    files: list[Path],
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
