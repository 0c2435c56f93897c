"""Paper-style comparison of several methods: a qualitative figure and a quantitative table.

    python -m metrics.compare --gt-dir HR --method Bicubic=results/bicubic --method HybriMamba=results/hm \
        [--lr-dir LR] [--names img1 img2 | --max-images 4] [--crop X Y W H] [--zoom 3] \
        [--lpips [--lpips-weights PATH]] [--out-dir results/compare]

Each ``--method NAME=DIR`` is a prediction folder (as test.py writes it: PNGs named like the
ground truth; other files are ignored). Scores are computed here from the images with the
metric functions (fsr convention: PSNR/SSIM on truncated uint8 Y, no crop; VIFp on grey luminance;
LPIPS-alex when asked), so the table does not depend on where test.py puts its CSV.
Writes ``figure.png`` (one row per image; columns [LR,] methods..., HR, titled; with ``--crop``
a red box and a zoomed inset of that box in every tile), ``table.md``, ``table.tex`` and
``scores.csv`` (per image and method) under ``--out-dir``, and prints the table and the paths.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path (python metrics/x.py): the repository root first, not metrics/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from metrics import table as metric_table
from metrics.io import finite_mean, note, score_folders, write_csv
from metrics.table import METRICS, Scorer
from utils import figure
from utils.cli import ArgumentParser, run_cli
from utils.image_io import images_by_stem, read_rgb

ALWAYS = ("vif",)  # scored here without a switch (test.py needs --vif); LPIPS needs --lpips


def parse_method(spec: str) -> tuple[str, Path]:
    """``NAME=DIR`` -> (name, folder); the folder must exist."""
    name, sep, folder = spec.partition("=")
    if not sep or not name or not folder:
        raise ValueError(f"--method expects NAME=DIR (e.g. HybriMamba=results/hm), got {spec!r}")
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"--method {name}: prediction folder {folder!r} does not exist")
    return name, Path(folder)


def default_scorers(opts: Any = None) -> dict[str, Scorer]:
    """The table's scorers at their default conventions: PSNR, SSIM, VIF, and LPIPS when ``opts`` asks (``lpips``)."""
    return metric_table.build_scorers(metric_table.selected(opts or {}, always=ALWAYS), opts)


def score_method(
    pred_dir: str | Path, gt_dir: str | Path, scorers: dict[str, Scorer] | None = None
) -> list[dict[str, Any]]:
    """Per-image rows {name, <metric>...} of one prediction folder against the ground truth."""
    return score_folders(pred_dir, gt_dir, scorers if scorers is not None else default_scorers(), progress=False)


def summarize_methods(per_method: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per method: {method, count, <metric means>} (inf PSNR left out of the mean)."""
    table = []
    for method, rows in per_method.items():
        keys = [k for k in rows[0] if k != "name"]
        table.append({"method": method, "count": len(rows), **{k: finite_mean(r[k] for r in rows)[0] for k in keys}})
    return table


def metric_keys(table: Sequence[dict[str, Any]]) -> list[str]:
    return [k for k in METRICS if all(k in row for row in table)]


def _best(table: Sequence[dict[str, Any]], key: str) -> float:
    values = [row[key] for row in table if math.isfinite(row[key])]
    return METRICS[key].best(values) if values else math.nan


def _fmt(key: str, value: float) -> str:
    return METRICS[key].format(value)


def markdown_table(table: Sequence[dict[str, Any]]) -> str:
    """GitHub markdown table, one row per method, best value per column in bold."""
    keys = metric_keys(table)
    lines = [
        "| Method | " + " | ".join(METRICS[k].header for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for row in table:
        cells = [f"**{_fmt(k, row[k])}**" if row[k] == _best(table, k) else _fmt(k, row[k]) for k in keys]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text


def latex_table(table: Sequence[dict[str, Any]], caption: str = "Quantitative comparison") -> str:
    """LaTeX ``table`` with a booktabs ``tabular``, best value per column in bold."""
    keys = metric_keys(table)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_latex_escape(caption)}}}",
        r"\begin{tabular}{l" + "c" * len(keys) + "}",
        r"\toprule",
        "Method & " + " & ".join(METRICS[k].latex for k in keys) + r" \\",
        r"\midrule",
    ]
    for row in table:
        cells = [rf"\textbf{{{_fmt(k, row[k])}}}" if row[k] == _best(table, k) else _fmt(k, row[k]) for k in keys]
        lines.append(_latex_escape(row["method"]) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _with_crop(img: np.ndarray, crop: figure.Box | None, tile: int, zoom: float) -> Image.Image:
    """Tile-sized image; with ``crop`` (in HR pixels) the box drawn and its zoom pasted bottom-right."""
    hr_side = img.shape[1]
    out = Image.fromarray(img).resize((tile, tile), Image.Resampling.NEAREST)
    if crop is None:
        return out
    factor = tile / hr_side
    box = figure.scale_box(crop, factor)
    left, top, w, h = box
    inset = out.crop((left, top, left + w, top + h))
    inset_w = min(int(round(w * zoom)), tile // 2)
    inset_h = max(1, int(round(inset_w * h / w)))
    inset = inset.resize((inset_w, inset_h), Image.Resampling.NEAREST)
    out = figure.draw_box(out, box)
    out.paste(figure.draw_box(inset, (0, 0, inset_w, inset_h)), (tile - inset_w, tile - inset_h))
    return out


def comparison_figure(
    methods: Sequence[tuple[str, Path]],
    gt_dir: str | Path,
    names: Sequence[str],
    lr_dir: str | Path | None = None,
    crop: figure.Box | None = None,
    zoom: float = 3.0,
    tile: int = 256,
) -> Image.Image:
    """Rows = images ``names``; columns = [LR,] each method, HR; every tile ``tile`` px, titled."""
    gts = images_by_stem(gt_dir, "ground-truth")
    folders = [(name, images_by_stem(folder, f"--method {name}")) for name, folder in methods]
    lrs = images_by_stem(lr_dir, "LR") if lr_dir is not None else None
    titles = (["LR"] if lrs is not None else []) + [name for name, _ in methods] + ["HR"]
    rows = []
    for stem in names:
        for role, found in [("ground-truth", gts), *((f"--method {n}", f) for n, f in folders)]:
            if stem not in found:
                raise ValueError(f"image {stem!r} is missing from the {role} folder")
        hr = read_rgb(gts[stem], tell=note)
        if crop is not None:
            left, top, w, h = crop
            if w < 1 or h < 1 or left < 0 or top < 0 or left + w > hr.shape[1] or top + h > hr.shape[0]:
                raise ValueError(f"--crop {crop} does not fit the {hr.shape[1]}x{hr.shape[0]} image {stem!r}")
        row = []
        if lrs is not None:
            if stem not in lrs:
                raise ValueError(f"image {stem!r} is missing from the LR folder {str(lr_dir)!r}")
            row.append(read_rgb(lrs[stem], tell=note))  # grid() shows it at tile size, nearest
        row += [_with_crop(read_rgb(f[stem], tell=note), crop, tile, zoom) for _, f in folders]
        row.append(_with_crop(hr, crop, tile, zoom))
        rows.append(row)
    return figure.grid(rows, titles, row_titles=None, tile=tile)


def compare(
    methods: Sequence[tuple[str, Path]],
    gt_dir: str | Path,
    out_dir: str | Path,
    lr_dir: str | Path | None = None,
    names: Sequence[str] | None = None,
    max_images: int = 4,
    crop: figure.Box | None = None,
    zoom: float = 3.0,
    tile: int = 256,
    scorers: dict[str, Scorer] | None = None,
) -> dict[str, Any]:
    """Score every method, write figure.png, table.md, table.tex and scores.csv; returns paths and table."""
    if not methods:
        raise ValueError("give at least one --method NAME=DIR")
    if len({name for name, _ in methods}) != len(methods):
        raise ValueError(f"method names must differ, got {[name for name, _ in methods]}")
    scorers = scorers if scorers is not None else default_scorers()
    per_method = {name: score_method(folder, gt_dir, scorers) for name, folder in methods}
    table = summarize_methods(per_method)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stems = list(names) if names else sorted(images_by_stem(gt_dir, "ground-truth"))[:max_images]
    fig = comparison_figure(methods, gt_dir, stems, lr_dir=lr_dir, crop=crop, zoom=zoom, tile=tile)
    paths = {
        "figure": figure.save_figure(fig, out / "figure.png"),
        "markdown": out / "table.md",
        "latex": out / "table.tex",
        "csv": out / "scores.csv",
    }
    paths["markdown"].write_text(markdown_table(table))
    paths["latex"].write_text(latex_table(table))
    write_csv(paths["csv"], [{"method": m, **row} for m, rows in per_method.items() for row in rows])
    return {"table": table, "paths": paths, "images": stems}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description="Qualitative figure and quantitative table for several SR methods")
    p.add_argument("--gt-dir", required=True, help="ground-truth HR folder")
    p.add_argument("--method", action="append", required=True, metavar="NAME=DIR", help="a prediction folder")
    p.add_argument("--lr-dir", default=None, help="LR inputs, shown as the first column (nearest upscaling)")
    p.add_argument("--names", nargs="+", default=None, help="image stems for the figure (default: first N)")
    p.add_argument("--max-images", type=int, default=4, help="figure rows when --names is not given")
    p.add_argument("--crop", type=int, nargs=4, default=None, metavar=("X", "Y", "W", "H"), help="zoom box, HR px")
    p.add_argument("--zoom", type=float, default=3.0, help="inset magnification of the --crop box")
    p.add_argument("--tile", type=int, default=256, help="displayed side of every tile, px")
    switches = [name for name, m in METRICS.items() if m.optional and name not in ALWAYS]  # --lpips ...
    metric_table.add_options(p, only=[*switches, "lpips_weights"])  # PSNR / SSIM fsr, VIF gray, LPIPS alex
    p.add_argument("--out-dir", default="results/compare")
    args = p.parse_args(argv)
    if args.max_images < 1 or args.tile < 16 or args.zoom <= 0:
        p.error(
            f"--max-images >= 1, --tile >= 16 and --zoom > 0 expected, got {args.max_images}, {args.tile}, {args.zoom}"
        )
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    methods = [parse_method(spec) for spec in args.method]
    scorers = default_scorers(args)  # LPIPS's model built once, before any image is read
    result = compare(
        methods,
        args.gt_dir,
        args.out_dir,
        lr_dir=args.lr_dir,
        names=args.names,
        max_images=args.max_images,
        crop=tuple(args.crop) if args.crop else None,
        zoom=args.zoom,
        tile=args.tile,
        scorers=scorers,
    )
    print(markdown_table(result["table"]), end="")
    for kind, path in result["paths"].items():
        print(f"{kind}: {path}")
    return result


if __name__ == "__main__":
    run_cli(main)
