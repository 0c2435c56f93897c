"""Facial landmarks for training with landmark supervision (DIC): files, geometry, heatmaps.

``read_landmarks(path)`` reads one landmark file per image set, in any of three formats:

- DIC's annotation pickle (``*.pkl``, the ``info_path`` of Maclory/Deep-Iterative-Collaboration):
  ``{image file name: {"landmark": [[x, y], ...], "bbox": [x0, y0, x1, y1]}}`` in the source
  image's pixels; the face is the bbox, cropped and resized to the HR size (no distortion).
  Read with a restricted unpickler (containers, numbers and numpy arrays only).
- CelebA's ``list_landmarks_align_celeba.txt``: a count line, a header line
  (``lefteye_x lefteye_y ... rightmouth_y``), then ``<file> x1 y1 ... x5 y5`` per image, in
  the aligned 178x218 images' pixels; the face is the image, fitted like the HR images
  (``data.*.fit``).
- This framework's JSON (written by ``data.prepare --landmarks``):
  ``{"format": "fsr-landmarks-v1", "size": [W, H], "points": {stem: [[x, y], ...]}}`` in the
  pixels of the prepared HR images.

Entries are looked up by file stem. Points follow the image through the same crop / resize,
as in DIC's data code: ``x' = (x - left) * size / width``. Heatmaps (DIC's ``generate_gt``) are
``exp(-d^2 / (2 sigma^2))`` on the integer grid of the HR size / ``stride``, one per point,
with the points divided by ``stride``.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from utils.image_io import DataError

BICUBIC = Image.Resampling.BICUBIC
JSON_FORMAT = "fsr-landmarks-v1"
HEATMAP_STRIDE = 4  # DIC's hourglass predicts heatmaps at 1/4 of the SR size
CELEBA_HEADER = (
    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
)


@dataclass(frozen=True)
class Landmarks:
    """One face: (K, 2) points (x, y) and an optional crop box (x0, y0, x1, y1) in the same pixels."""

    points: np.ndarray
    bbox: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class LandmarkSet:
    """The landmarks of an image set, by file stem; ``frame`` says what the coordinates refer to
    ("source": the raw image, fitted or bbox-cropped; "hr": the prepared HR image of ``size``)."""

    path: str
    faces: dict[str, Landmarks]
    frame: str
    size: tuple[int, int] | None = None

    @property
    def n_points(self) -> int:
        return next(iter(self.faces.values())).points.shape[0]

    def get(self, stem: str) -> Landmarks:
        if stem not in self.faces:
            raise DataError(f"no landmarks for image {stem!r} in the landmark file {self.path!r}")
        return self.faces[stem]

    def check_covers(self, stems: list[str], key: str) -> None:
        """Every image has an entry; otherwise a DataError naming a few that have none."""
        missing = [s for s in stems if s not in self.faces]
        if missing:
            raise DataError(
                f"{key}.landmarks {self.path!r} has no entry for {len(missing)} of {len(stems)} image(s), "
                f"e.g. {', '.join(missing[:5])}"
            )


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that builds only builtin containers / numbers and numpy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a landmark file")
        return super().find_class(module, name)


def _points(value: object, where: str) -> np.ndarray:
    try:
        pts = np.asarray(value, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise DataError(f"{where}: landmarks must be [[x, y], ...] numbers, got {str(value)[:80]}") from None
    if pts.shape[0] == 0 or not np.isfinite(pts).all():
        raise DataError(f"{where}: landmarks must be a non-empty list of finite [x, y] pairs")
    return pts


def _read_pickle(path: Path) -> LandmarkSet:
    try:
        info = _SafeUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"landmark file {str(path)!r} is not a DIC annotation pickle: {err}") from None
    if not isinstance(info, dict) or not info:
        raise DataError(f"landmark file {str(path)!r}: expected a non-empty {{image name: {{landmark, bbox}}}} dict")
    faces = {}
    for name, entry in info.items():
        where = f"landmark file {str(path)!r}, image {name!r}"
        if not isinstance(entry, dict) or "landmark" not in entry:
            raise DataError(f"{where}: expected a dict with 'landmark' (and 'bbox'), got {str(entry)[:80]}")
        bbox = entry.get("bbox")
        if bbox is not None:
            bbox = tuple(int(round(float(v))) for v in np.asarray(bbox).reshape(4))  # pixel slices, as DIC
            if bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
                raise DataError(f"{where}: bbox {list(bbox)} must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
        faces[Path(str(name)).stem] = Landmarks(_points(entry["landmark"], where), bbox)
    return LandmarkSet(str(path), faces, "source")


def _read_celeba(path: Path, lines: list[str]) -> LandmarkSet:
    faces = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 11:
            raise DataError(f"landmark file {str(path)!r} line {number}: expected a file name and 10 numbers")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise DataError(f"landmark file {str(path)!r} line {number}: coordinates must be numbers") from None
        faces[Path(fields[0]).stem] = Landmarks(np.asarray(values).reshape(5, 2))
    if not faces:
        raise DataError(f"landmark file {str(path)!r} lists no image")
    return LandmarkSet(str(path), faces, "source")


def _read_json(path: Path, text: str) -> LandmarkSet:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"landmark file {str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != JSON_FORMAT or not isinstance(data.get("points"), dict):
        raise DataError(f"landmark file {str(path)!r}: expected {{'format': {JSON_FORMAT!r}, 'size', 'points'}}")
    size = data.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise DataError(f"landmark file {str(path)!r}: 'size' must be [width, height] of the HR images, got {size!r}")
    size = (size[0], size[1])
    faces = {stem: Landmarks(_points(p, f"{path}, image {stem!r}")) for stem, p in data["points"].items()}
    if not faces:
        raise DataError(f"landmark file {str(path)!r} lists no image")
    return LandmarkSet(str(path), faces, "hr", size)


def read_landmarks(path: str | Path) -> LandmarkSet:
    """The landmark file at ``path`` (DIC pickle, CelebA aligned txt or fsr JSON; see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"landmark file {str(path)!r} does not exist")
    if path.suffix.lower() in (".pkl", ".pickle"):
        result = _read_pickle(path)
    else:
        text = path.read_text(errors="replace")
        lines = text.splitlines()
        if len(lines) >= 2 and " ".join(lines[1].split()) == CELEBA_HEADER:
            result = _read_celeba(path, lines)
        elif text.lstrip().startswith("{"):
            result = _read_json(path, text)
        else:
            raise DataError(
                f"landmark file {str(path)!r}: not a DIC pickle (.pkl), CelebA list_landmarks_align_celeba.txt "
                f"or {JSON_FORMAT} JSON"
            )
    counts = {f.points.shape[0] for f in result.faces.values()}
    if len(counts) > 1:
        raise DataError(f"landmark file {str(path)!r} mixes faces with {sorted(counts)} points")
    return result


def crop_box(img_size: tuple[int, int], face: Landmarks, fit: str) -> tuple[int, int, int, int]:
    """The region (x0, y0, x1, y1) of the source image that becomes the HR face."""
    if face.bbox is not None:
        return face.bbox
    w, h = img_size
    if fit == "center_crop" and w != h:  # as data.degrade.fit_hr
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return (left, top, left + side, top + side)
    return (0, 0, w, h)


def fit_face(img: Image.Image, face: Landmarks, size: int, fit: str) -> tuple[Image.Image, np.ndarray]:
    """(size x size HR image, its points): the crop box resized with PIL bicubic, points mapped alike."""
    x0, y0, x1, y1 = crop_box(img.size, face, fit)
    if (x0, y0, x1, y1) != (0, 0, *img.size):
        img = img.crop((x0, y0, x1, y1))
    if img.size != (size, size):
        img = img.resize((size, size), BICUBIC)
    scale = np.array([size / (x1 - x0), size / (y1 - y0)])
    return img, (face.points - np.array([x0, y0])) * scale


def hr_points(landmarks: LandmarkSet, stem: str, hr_size: tuple[int, int]) -> np.ndarray:
    """Points of a prepared HR image (``frame == "hr"``), rescaled if the file's size differs."""
    face = landmarks.get(stem)
    if landmarks.size is None or tuple(landmarks.size) == tuple(hr_size):
        return face.points
    return face.points * np.array(hr_size) / np.array(landmarks.size)


def heatmaps(points: np.ndarray, size: tuple[int, int], stride: int = 4, sigma: float = 1.0) -> np.ndarray:
    """(K, H / stride, W / stride) float32 Gaussian heatmaps of (K, 2) HR points (x, y)."""
    w, h = size[0] // stride, size[1] // stride
    p = points / stride
    dx = (np.arange(w)[None, :] - p[:, 0:1]) ** 2  # (K, w)
    dy = (np.arange(h)[None, :] - p[:, 1:2]) ** 2  # (K, h)
    return np.exp(-(dy[:, :, None] + dx[:, None, :]) / (2.0 * sigma * sigma)).astype(np.float32)
