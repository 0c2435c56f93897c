"""Super-resolve a folder with a trained checkpoint, save PNGs under the same names, then score them.

    python test.py --checkpoint CKPT --lr-dir DIR [--hr-dir DIR] --out-dir DIR [--degrade]
                   [--config CFG] [--batch-size N] [--device cpu|cuda] [--no-ema] [--quantize truncate|round]
                   [--convention fsr|basicsr] [--crop-border N] [--lpips [--lpips-net alex|vgg]]
                   [--vif [--vif-channel gray|y]]

Inputs (per image, network input = bicubic-upsampled LR, like training):
- LR of size HR/scale (16x16 for 128x128 x8): upsampled by ``scale`` with PIL bicubic;
- LR already upsampled (same size as the HR): used as is;
- ``--degrade``: ``--lr-dir`` holds HR images, degraded on the fly (PIL bicubic down by
  ``scale`` then up); they are also the ground truth unless ``--hr-dir`` is given.
The expected HR size is each HR image's size when ``--hr-dir`` is given, else ``--hr-size``
(default: the config's ``data.val.hr_size``). ``--fit resize`` takes an LR of any other size
(e.g. a face cropped from a photo) and resizes it to HR/scale first (PIL bicubic), noted once.
Two inputs with the same stem (a.png, a.jpg) are refused (their outputs would overwrite each
other); an ``--out-dir`` inside a run folder whose training holds ``run.lock`` is refused.

Outputs: ``<out_dir>/images/<stem>.png`` (uint8; the folder holds only the predictions, so it can
be handed to any folder-scoring script, the papers' own included), and with ground truth
``<out_dir>/results.csv`` (per image) and ``<out_dir>/summary.json`` (means, conventions, count,
milliseconds per image, quantisation), written after the scores are printed. Outputs are saved
as the papers' test scripts save them: ``uint8(clip(x * 255, 0, 255))``, truncated
(``--quantize round`` rounds instead); the scores are those of the saved files.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning, so a shared, loaded CPU does not
# slow training 6x (README, "Threads"); OMP_WAIT_POLICY / OMP_NUM_THREADS set by the user win.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from data.degrade import KERNELS, degrade, resize, to_tensor
from engine.evaluator import Batch, Evaluator
from metrics import table as metric_table
from metrics.io import csv_text, format_summary, summarize, write_csv
from metrics.psnr_ssim import describe
from metrics.tensor import QUANTIZE
from model.build import COMPILE_MODES, compile_network, load_network
from utils.authors import refuse_authors_flags
from utils.cli import ArgumentParser, os_error_message, run_cli
from utils.image_io import (
    IMAGE_EXTENSIONS,
    DataError,
    index_by_stem,
    list_images,
    pair_by_stem,
    read_rgb_image,
)
from utils.run_folder import live_lock_owner
from utils.value_range import predict_unit

log = logging.getLogger("test")
QUANTIZE_TEXT = {
    "truncate": "truncate: uint8(clip(x * 255, 0, 255)) cut toward zero, as the papers' test scripts save outputs",
    "round": "round: uint8(round(clip(x * 255, 0, 255)))",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    refuse_authors_flags(argv, "test.py")
    parser = ArgumentParser(description="Face SR inference and scoring with a trained checkpoint")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--config", default=None, help="YAML to build the model from (default: the checkpoint's)")
    parser.add_argument("--lr-dir", required=True, help="LR images (or HR images with --degrade)")
    parser.add_argument("--hr-dir", default=None, help="ground truth, paired by file name")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--degrade", action="store_true", help="--lr-dir holds HR images: bicubic down x scale then up")
    parser.add_argument("--hr-size", type=int, default=None, help="expected HR side without --hr-dir")
    parser.add_argument("--kernel", choices=KERNELS, default="pil", help="bicubic kernel for upsampling / --degrade")
    parser.add_argument(
        "--fit",
        choices=("exact", "resize"),
        default="exact",
        help="exact (default): LR must be HR/scale or HR-sized; resize: any LR size is resized to HR/scale first",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights even when EMA weights exist")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE,
        default="truncate",
        help="float -> uint8 of the saved outputs (papers: truncate)",
    )
    metric_table.add_options(parser)  # --convention, --crop-border, --lpips, --lpips-net, --vif ... (metrics.table)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--compile", choices=COMPILE_MODES, default="none", help="torch.compile the network (default none)"
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    return args


def load_model(
    checkpoint: str | Path, config: str | None, use_ema: bool, device: str
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Model built from the config (``config`` or the checkpoint's) with its EMA (default) or raw weights."""
    return load_network(checkpoint, config, use_ema, device)


def plan(lr_dir: str, hr_dir: str | None, degrade_hr: bool) -> list[tuple[str, Path, Path | None]]:
    """(stem, input path, ground-truth path or None) per image; LR and HR pair by file stem."""
    inputs = list_images(lr_dir, "HR input folder (--degrade)" if degrade_hr else "LR folder")
    if hr_dir is None:
        try:
            index_by_stem(inputs, f"input folder {lr_dir!r}")
        except DataError as err:
            raise DataError(f"{err}: both outputs would be <stem>.png; rename or move one") from None
        return [(p.stem, p, p if degrade_hr else None) for p in inputs]
    pairs = pair_by_stem(inputs, list_images(hr_dir, "HR folder"), roles=("LR", "HR"), folders=(lr_dir, hr_dir))
    return [(lr.stem, lr, hr) for lr, hr in pairs]


def network_input(
    path: Path,
    hr: Image.Image | None,
    scale: int,
    hr_size: int,
    degrade_hr: bool,
    kernel: str,
    lr_input: bool = False,
    fit: str = "exact",
) -> tuple[torch.Tensor, str]:
    """(3, H, W) bicubic-upsampled input in [0, 1] (the LR itself for ``lr_input`` networks) and how it was made;
    a wrong size names the file (``fit="resize"``: resized to HR/scale instead)."""
    img = read_rgb_image(path)
    w, h = img.size
    if degrade_hr:
        if w % scale or h % scale:
            raise DataError(f"image {str(path)!r} is {w}x{h}; --degrade needs sides divisible by the scale {scale}")
        if hr is not None and hr.size != img.size:
            raise DataError(f"image {str(path)!r} is {w}x{h} but its HR is {hr.size[0]}x{hr.size[1]}")
        return to_tensor(degrade(img, scale, kernel)[0 if lr_input else 1]), "degraded"
    tw, th = hr.size if hr is not None else (hr_size, hr_size)
    if (w, h) == (tw, th):
        if lr_input:
            raise DataError(
                f"LR image {str(path)!r} is already upsampled ({w}x{h}); this network takes the HR/{scale} LR"
            )
        return to_tensor(img), "upsampled"
    if (w * scale, h * scale) == (tw, th):
        return to_tensor(img if lr_input else resize(img, (tw, th), kernel)), "small"
    if fit == "resize":
        small = img.resize((tw // scale, th // scale), Image.Resampling.BICUBIC)
        return to_tensor(small if lr_input else resize(small, (tw, th), kernel)), f"resized from {w}x{h}"
    raise DataError(
        f"LR image {str(path)!r} is {w}x{h} (WxH); expected {tw // scale}x{th // scale} (HR/{scale}) or "
        f"{tw}x{th} (already upsampled), for HR size {tw}x{th}"
        + ("" if hr is not None else " (set by --hr-size / data.val.hr_size)")
        + "; --fit resize resizes any input to HR/scale"
    )


def prepare_out_dir(out_dir: Path, stems: list[str]) -> Path:
    """``<out_dir>/images``, created and checked writable before any inference; warns about stale images.
    A folder inside a run folder that a live training holds (``run.lock``) is refused."""
    for folder in (out_dir.resolve(), *out_dir.resolve().parents):
        owner = live_lock_owner(folder)
        if owner is not None:
            raise OSError(
                f"--out-dir {str(out_dir)!r} is inside the run folder {str(folder)!r}, in use by a running training "
                f"({owner}); write elsewhere or wait for it to finish"
            )
    images = out_dir / "images"
    try:
        images.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=images).close()
    except OSError as err:
        raise OSError(f"cannot write to the output folder {str(images)!r}: {err.strerror or err}") from None
    wanted = set(stems)
    stale = sorted(p.name for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.stem not in wanted)
    if stale:
        log.warning(
            f"{images} already holds {len(stale)} image(s) that this run does not write (e.g. {', '.join(stale[:5])}); "
            "scripts that score the whole folder will see them"
        )
    return images


def input_batches(
    items: list[tuple[str, Path, Path | None]],
    args: argparse.Namespace,
    scale: int,
    hr_size: int,
    lr_input: bool,
    kinds: set[str],
) -> Iterator[Batch]:
    """(stems, stacked network inputs, uint8 HR or None) of up to ``--batch-size`` images of one size, in order;
    how each input was made goes into ``kinds``."""
    batch: list[tuple[str, torch.Tensor, np.ndarray | None]] = []
    for stem, path, hr_path in items:
        hr = read_rgb_image(hr_path) if hr_path is not None else None
        x, kind = network_input(
            path,
            hr,
            scale=scale,
            hr_size=hr_size,
            degrade_hr=args.degrade,
            kernel=args.kernel,
            lr_input=lr_input,
            fit=args.fit,
        )
        if kind.startswith("resized") and not any(k.startswith("resized") for k in kinds):
            log.info(
                f"--fit resize: {path.name} is {kind.split()[-1]}, resized to {hr_size // scale}x{hr_size // scale} "
                f"then upsampled x{scale} (noted once)"
            )
        kinds.add("resized" if kind.startswith("resized") else kind)
        if batch and batch[-1][1].shape != x.shape:
            yield _stacked(batch)
        gt = None if hr is None else np.asarray(hr)  # one decoder (utils.image_io) for data and metrics
        batch.append((stem, x, gt))
        if len(batch) == args.batch_size:
            yield _stacked(batch)
    if batch:
        yield _stacked(batch)


def _stacked(batch: list[tuple[str, torch.Tensor, np.ndarray | None]]) -> Batch:
    """The batch as (stems, inputs, ground truths); the list is emptied for the next one."""
    stems, xs, gts = zip(*batch)
    batch.clear()
    return list(stems), torch.stack(xs), list(gts)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Super-resolve, save and (with ground truth) score every image; returns the summary and per-image rows."""
    device = torch.device(args.device)
    metric_names = metric_table.selected(args)
    scorers = metric_table.build_scorers(metric_names, args, str(device))  # LPIPS's model: fails before inference
    net, cfg, info = load_model(args.checkpoint, args.config, not args.no_ema, args.device)
    compile_network(net, args.compile)
    scale = cfg["scale"]
    hr_size = args.hr_size or cfg["data"]["val"]["hr_size"]
    items = plan(args.lr_dir, args.hr_dir, args.degrade)
    images_dir = prepare_out_dir(Path(args.out_dir), [stem for stem, _, _ in items])
    scored = items[0][2] is not None
    kinds: set[str] = set()
    saved = 0

    def save(stem: str, pred: np.ndarray) -> None:  # each prediction, before it is scored
        nonlocal saved
        save_output(Image.fromarray(pred), images_dir / f"{stem}.png", evaluator.rows, saved, len(items), args)
        saved += 1

    evaluator = Evaluator(
        lambda x: predict_unit(net, x, cfg["data"]["value_range"]),  # [0, 1] in and out, any network range
        scorers,
        quantize=args.quantize,
        on_prediction=save,
        timed=True,
    )
    bar = tqdm(total=len(items), desc="super-resolving", unit="image", disable=args.no_progress)
    with logging_redirect_tqdm(), bar:  # log lines (the scan backend ...) print above the bar
        for stems, x, gts in input_batches(
            items, args, scale=scale, hr_size=hr_size, lr_input=getattr(net, "lr_input", False), kinds=kinds
        ):
            evaluator.add(stems, x.to(device), gts)
            bar.update(len(stems))  # counted once inferred, saved and scored
    rows = evaluator.rows

    summary: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        **info,
        "scale": scale,
        "inputs": sorted(kinds),
        "count": len(items),
        "device": str(device),
        "ms_per_image": 1000.0 * evaluator.forward_s / len(items),
        "images_dir": str(images_dir),
        "quantize": args.quantize,
        "quantize_convention": QUANTIZE_TEXT[args.quantize],
    }
    if scored:
        metric_keys = [k for k in rows[0] if k != "name"]
        summary.update({k: v for k, v in summarize(rows, metric_keys).items() if k != "count"})
        summary.update(metric_table.conventions(metric_names, args))
    return summary, rows


def save_output(
    img: Image.Image, path: Path, rows: list[dict[str, Any]], saved: int, total: int, args: argparse.Namespace
) -> None:
    """Save one prediction PNG; a failed write (disk full) removes the partial file, prints the scores of the
    images done so far and stops naming the file."""
    try:
        img.save(path)
    except OSError as err:
        path.unlink(missing_ok=True)
        if rows:
            keys = [k for k in rows[0] if k != "name"]
            log.info(
                f"scores of the {len(rows)} image(s) written before the failure ({describe(args.convention, args.crop_border)}):"
            )
            for line in format_summary(summarize(rows, keys), keys):
                log.info(line)
        raise OSError(
            f"{os_error_message(err, path)}; stopped after {saved} of {total} image(s) were written"
            + (", their scores are printed above" if rows else "")
        ) from None


def save_results(out_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """results.csv and summary.json in ``out_dir``; on failure the rows go to stdout and the error says so."""
    try:
        write_csv(out_dir / "results.csv", rows)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    except OSError as err:
        print(csv_text(rows), end="")
        print(json.dumps(summary))
        raise OSError(
            f"cannot write results.csv / summary.json in {str(out_dir)!r} ({err.strerror or err}); "
            "the scores above are complete and the per-image rows and summary were printed above"
        ) from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    summary, rows = run(args)
    log.info(
        f"{summary['count']} image(s) -> {summary['images_dir']} ({summary['ms_per_image']:.2f} ms/image forward, "
        f"quantize={summary['quantize']})"
    )
    if rows:
        keys = [k for k in rows[0] if k != "name"]
        for key in dict.fromkeys(metric_table.METRICS[name].convention_key for name in keys):
            log.info(f"{key.removesuffix('_convention')}: {summary[key]}")  # convention: (PSNR / SSIM), vif: ...
        for line in format_summary(summary, keys):
            log.info(line)
        save_results(Path(args.out_dir), summary, rows)
        log.info(
            f"per-image scores: {Path(args.out_dir) / 'results.csv'}; summary: {Path(args.out_dir) / 'summary.json'}"
        )
    return summary


if __name__ == "__main__":
    run_cli(main)
