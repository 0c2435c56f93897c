"""Image folders for scoring: reading RGB images, pairing by file stem, per-image CSV, means."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array (grey and RGBA are converted)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {str(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"cannot read image file {str(path)!r}: {err}") from None


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
    """Mean over the finite values and the number of infinite ones left out.

    An identical pair has PSNR = inf; it is reported per image as inf and left out of the
    mean (the count is reported next to it) so one perfect image does not make the mean inf.
    All values infinite -> (inf, count).
    """
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    skipped = len(values) - len(finite)
    if not finite:
        return (math.inf if values else math.nan), skipped
    return float(np.mean(finite)), skipped


def write_csv(path: str | Path, rows: list[dict[str, object]]) -> None:
    """Write per-image rows (dicts with the same keys) as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def score_folders(
    pred_dir: str | Path, gt_dir: str | Path, metrics: dict[str, object], progress: bool = True
) -> list[dict[str, object]]:
    """Per-image rows ``{"name": stem, metric: value, ...}``; ``metrics`` maps name -> fn(pred, gt)."""
    from tqdm import tqdm

    rows = []
    for stem, pred_path, gt_path in tqdm(pair_folders(pred_dir, gt_dir), desc="scoring", disable=not progress):
        pred, gt = read_pair(pred_path, gt_path)
        rows.append({"name": stem, **{name: float(fn(pred, gt)) for name, fn in metrics.items()}})
    return rows


def summarize(rows: list[dict[str, object]], keys: Sequence[str]) -> dict[str, object]:
    """Means of ``keys`` over rows (PSNR-style inf left out and counted under ``<key>_inf_count``)."""
    summary: dict[str, object] = {"count": len(rows)}
    for key in keys:
        mean, skipped = finite_mean(row[key] for row in rows)
        summary[key] = mean
        if skipped:
            summary[f"{key}_inf_count"] = skipped
    return summary


def score_and_report(
    pred_dir: str | Path, gt_dir: str | Path, metrics: dict[str, Callable], csv_path: str | Path, convention: str
) -> dict[str, object]:
    """Standalone scripts: score paired folders, write the per-image CSV, print the means; returns the summary."""
    rows = score_folders(pred_dir, gt_dir, metrics)
    write_csv(csv_path, rows)
    summary = {**summarize(rows, list(metrics)), "convention": convention}
    print(f"convention: {convention}")
    for key in metrics:
        if f"{key}_inf_count" in summary:
            print(f"{summary[f'{key}_inf_count']} identical image(s) have {key.upper()}=inf, left out of the mean")
    print(f"images: {summary['count']}  " + "  ".join(f"{key.upper()}: {summary[key]:.4f}" for key in metrics))
    print(f"per-image CSV: {csv_path}")
    print(json.dumps(summary))
    return summary
