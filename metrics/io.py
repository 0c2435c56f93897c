"""Image folders for scoring: reading RGB images, pairing by file stem, per-image CSV, means.

Image modes: the policy of :mod:`utils.image_decode`, shared with the training data (numpy / PIL
only: 16-bit images scaled with ``round(v / 257)``, never clipped).

Averaging rule (every metric, every script and ``test.py``): the folder mean is the mean over
the finite per-image values; images whose value is inf (PSNR of identical images) or NaN (e.g.
VIF of a flat reference) are left out of the mean, counted and named; with no finite value the
mean is NaN.

Results never go into the prediction folder unless asked: the scripts print the scores first
and then write the per-image CSV beside the folder (``<pred_dir>_<metric>.csv``) or to ``--csv``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.image_decode import IMAGE_EXTENSIONS, decode_rgb

_noted: set[str] = set()


def _note_once(kind: str, path: str | Path) -> None:
    """Each kind of conversion (RGBA, grey, 16-bit, EXIF orientation ...) told once per process, on stderr."""
    if kind not in _noted:
        _noted.add(kind)
        print(f"note: converting {kind} images to 8-bit RGB (first one: {path})", file=sys.stderr)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array (mode policy: :mod:`utils.image_decode`); each kind
    of conversion is noted once on stderr."""
    return decode_rgb(path, note=lambda kind: _note_once(kind, path))


def list_images(folder: str | Path, role: str = "image") -> dict[str, Path]:
    """Map file stem -> path for the images of ``folder`` (extension-insensitive, not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{role} folder {str(folder)!r} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in found:
            raise ValueError(
                f"{role} folder {str(folder)!r} holds two images with the stem {path.stem!r}: "
                f"{found[path.stem].name} and {path.name}"
            )
        found[path.stem] = path
    if not found:
        raise ValueError(f"{role} folder {str(folder)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def pair_folders(pred_dir: str | Path, gt_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """(stem, prediction path, ground-truth path) for every stem; any unmatched name is an error."""
    preds = list_images(pred_dir, "prediction")
    gts = list_images(gt_dir, "ground-truth")
    only_pred = sorted(set(preds) - set(gts))
    only_gt = sorted(set(gts) - set(preds))
    if only_pred or only_gt:
        raise ValueError(
            f"prediction folder {str(pred_dir)!r} and ground-truth folder {str(gt_dir)!r} do not pair by file name; "
            f"only in predictions ({len(only_pred)}): {_names(only_pred)}; "
            f"only in ground truth ({len(only_gt)}): {_names(only_gt)}"
        )
    return [(stem, preds[stem], gts[stem]) for stem in sorted(preds)]


def _names(stems: Sequence[str], limit: int = 20) -> str:
    if not stems:
        return "none"
    shown = ", ".join(stems[:limit])
    return shown + (f", ... ({len(stems) - limit} more)" if len(stems) > limit else "")


def read_pair(pred_path: Path, gt_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both images of a pair as uint8 RGB; different sizes are an error naming both."""
    pred, gt = read_rgb(pred_path), read_rgb(gt_path)
    check_same_size(pred, gt, str(pred_path), str(gt_path))
    return pred, gt


def check_same_size(pred: np.ndarray, gt: np.ndarray, pred_name: str = "prediction", gt_name: str = "ground truth"):
    """Raise if two HxWxC arrays differ in shape, naming both and their WxH sizes."""
    if pred.shape != gt.shape:
        raise ValueError(
            f"size mismatch: {pred_name} is {pred.shape[1]}x{pred.shape[0]} but {gt_name} is "
            f"{gt.shape[1]}x{gt.shape[0]} (width x height)"
        )


def finite_mean(values: Iterable[float]) -> tuple[float, int]:
    """(mean over the finite values, number of values left out: inf and NaN); NaN when none is finite."""
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    return (float(np.mean(finite)) if finite else math.nan), len(values) - len(finite)


def write_csv(path: str | Path, rows: list[dict[str, object]]) -> None:
    """Write per-image rows (dicts with the same keys) as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        handle.write(csv_text(rows))


def csv_text(rows: list[dict[str, object]]) -> str:
    """Per-image rows as CSV text (header first)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def score_folders(
    pred_dir: str | Path, gt_dir: str | Path, metrics: dict[str, Callable], progress: bool = True
) -> list[dict[str, object]]:
    """Per-image rows ``{"name": stem, metric: value, ...}``; ``metrics`` maps name -> fn(pred, gt)."""
    rows = []
    for stem, pred_path, gt_path in tqdm(pair_folders(pred_dir, gt_dir), desc="scoring", disable=not progress):
        pred, gt = read_pair(pred_path, gt_path)
        rows.append({"name": stem, **{name: float(fn(pred, gt)) for name, fn in metrics.items()}})
    return rows


def summarize(rows: list[dict[str, object]], keys: Sequence[str]) -> dict[str, object]:
    """Means of ``keys`` over rows under the averaging rule (module docstring).

    Per key: ``<key>`` the mean, and when images were left out ``<key>_excluded``, a dict
    image name -> "inf" / "-inf" / "nan".
    """
    summary: dict[str, object] = {"count": len(rows)}
    for key in keys:
        mean, _ = finite_mean(row[key] for row in rows)
        summary[key] = mean
        excluded = {str(row["name"]): str(float(row[key])) for row in rows if not math.isfinite(float(row[key]))}
        if excluded:
            summary[f"{key}_excluded"] = excluded
    return summary


def format_summary(summary: dict[str, object], keys: Sequence[str]) -> list[str]:
    """Human-readable lines: the means, then one line per metric with left-out images."""
    lines = [f"images: {summary['count']}  " + "  ".join(f"{key.upper()}: {summary[key]:.4f}" for key in keys)]
    for key in keys:
        excluded = summary.get(f"{key}_excluded")
        if excluded:
            kinds = ", ".join(f"{name} ({value})" for name, value in list(excluded.items())[:20])
            more = f", ... ({len(excluded) - 20} more)" if len(excluded) > 20 else ""
            lines.append(
                f"{key.upper()}: {len(excluded)} of {summary['count']} image(s) not finite, left out of the mean: "
                f"{kinds}{more}"
            )
    return lines


def default_csv(pred_dir: str | Path, suffix: str) -> Path:
    """The per-image CSV beside (never inside) the prediction folder: ``<pred_dir>_<suffix>.csv``."""
    folder = Path(pred_dir).resolve()
    return folder.parent / f"{folder.name}_{suffix}.csv"


def save_or_print(path: Path, rows: list[dict[str, object]]) -> None:
    """Write the CSV; when that fails, print its rows to stdout and raise an error saying so."""
    try:
        write_csv(path, rows)
    except OSError as err:
        sys.stdout.write(csv_text(rows))
        raise OSError(
            f"cannot write the per-image CSV {str(path)!r} ({err.strerror or err}); the scores above are complete "
            "and the per-image rows were printed above; pass --csv PATH to write them elsewhere"
        ) from None


def score_and_report(
    pred_dir: str | Path,
    gt_dir: str | Path,
    metrics: dict[str, Callable],
    csv_path: str | Path,
    convention: str,
    extra: dict[str, object] | None = None,
) -> dict[str, object]:
    """Standalone scripts: score paired folders, print the means, then write the per-image CSV."""
    rows = score_folders(pred_dir, gt_dir, metrics)
    summary = {**summarize(rows, list(metrics)), "convention": convention, **(extra or {})}
    print(f"convention: {convention}")
    for line in format_summary(summary, list(metrics)):
        print(line)
    print(json.dumps(summary))
    save_or_print(Path(csv_path), rows)
    print(f"per-image CSV: {csv_path}")
    return summary
