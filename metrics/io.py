"""Scoring image folders: per-image rows, CSV, means.

Folders are listed, paired by file stem and read by :mod:`utils.image_io`, the one image-file module of
the training data and ``test.py`` (one mode policy: 16-bit images scaled with ``round(v / 257)``, never
clipped); each kind of conversion is noted once on stderr.

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

from utils.image_io import pair_folders, read_pair


def note(message: str) -> None:
    """How the metric scripts tell of a conversion made while reading (each kind once): a line on stderr."""
    print(f"note: {message}", file=sys.stderr)


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
    for pred_path, gt_path in tqdm(pair_folders(pred_dir, gt_dir), desc="scoring", disable=not progress):
        pred, gt = read_pair(pred_path, gt_path, tell=note)
        rows.append({"name": pred_path.stem, **{name: float(fn(pred, gt)) for name, fn in metrics.items()}})
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
    *,
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
