"""The demo end to end at the real geometry (16x16 -> 128x128, x8): train, test, score, show.

    python -m tools.demo [--config configs/demo.yaml] [--iterations N] [--test-images N] [--set k=v ...]

1. ``train.py --overwrite`` moves a previous run folder ``experiments/<name>`` aside to
   ``<name>.old-<time>`` (never deleted, refused while a live run holds its lock; the move is
   printed) and trains the config on the built-in
   sample faces (``data.train.type: sample``: 16 astronaut crops).
2. ``--test-images`` held-out crops (the sample set's ``val`` split, cut with another seed than
   the training crops) are written as HR 128x128 / LR 16x16 PNGs under ``<run>/demo/data``;
   the bicubic baseline is written to ``<run>/demo/bicubic``.
3. ``test.py`` super-resolves them with the final weights (``latest.pt``, EMA) into ``<run>/demo/sr/images``.
4. The table (bicubic vs the model: PSNR, SSIM, VIF, LPIPS when its backbone weights are
   present) and the border table (mean / max |pred - HR| in the outer 2-pixel band vs the
   interior) are computed here from the PNGs with the metric functions, printed, and written
   with the LR | Bicubic | SR | HR figure under ``<run>/demo/results``.

A training stopped before its last iteration (Ctrl-C, SIGTERM) is not tested: the demo says at
which iteration it stopped and exits with status 1 (``make demo`` again starts over).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import train
from data.degrade import degrade, fit_hr
from data.sample import face_crops
from metrics import compare
from metrics.io import note
from utils.checkpoint import load_checkpoint
from utils.cli import ArgumentParser, run_cli
from utils.config import load_config
from utils.image_io import pair_folders, read_pair

BAND = 2
ROOT = Path(__file__).resolve().parents[1]


def _test_script() -> Any:
    """The repo's test.py as a module (by path: ``import test`` may find the standard library's package)."""
    spec = importlib.util.spec_from_file_location("fsr_test_script", ROOT / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runs_aside(run_dir: Path) -> set[Path]:
    """The ``<name>.old-*`` folders that ``train.py --overwrite`` moved previous runs of ``run_dir`` to."""
    return set(run_dir.parent.glob(f"{run_dir.name}.old-*"))


def write_heldout(folder: Path, count: int, hr_size: int, scale: int, kernel: str) -> tuple[Path, Path, Path]:
    """HR, LR (HR / scale) and bicubic-upsampled PNGs of ``count`` held-out sample crops (the ``val`` split)."""
    dirs = tuple(folder / sub for sub in ("data/HR", "data/LR", "bicubic"))
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(face_crops(count, "val")):
        hr = fit_hr(crop, hr_size, "resize")
        small, up = degrade(hr, scale, kernel)
        name = f"heldout_{i:02d}.png"
        for d, img in zip(dirs, (hr, small, up)):
            img.save(d / name)
    return dirs  # type: ignore[return-value]


def band_mask(height: int, width: int, band: int = BAND) -> np.ndarray:
    """True in the outer ``band`` rows and columns."""
    mask = np.ones((height, width), dtype=bool)
    mask[band:-band, band:-band] = False
    return mask


def border_errors(pred_dir: Path, gt_dir: Path, band: int = BAND) -> dict[str, float]:
    """Mean and max |pred - gt| (RGB, 0..255) over all images, in the outer band and in the interior."""
    border, inner = [], []
    for pred_path, gt_path in pair_folders(pred_dir, gt_dir):
        pred, gt = read_pair(pred_path, gt_path, tell=note)
        diff = np.abs(pred.astype(np.int16) - gt.astype(np.int16))
        mask = band_mask(*gt.shape[:2], band)
        border.append(diff[mask])
        inner.append(diff[~mask])
    b, i = np.concatenate(border), np.concatenate(inner)
    return {
        "band_mean": float(b.mean()),
        "band_max": float(b.max()),
        "inner_mean": float(i.mean()),
        "inner_max": float(i.max()),
    }


def border_table(rows: dict[str, dict[str, float]], band: int = BAND) -> str:
    lines = [
        f"| |pred - HR| (0..255) | outer {band}-px band mean | band max | interior mean | interior max |",
        "|---|---|---|---|---|",
    ]
    for method, e in rows.items():
        lines.append(
            f"| {method} | {e['band_mean']:.2f} | {e['band_max']:.0f} | {e['inner_mean']:.2f} | {e['inner_max']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def lpips_available() -> bool:
    """Whether the LPIPS-alex torchvision backbone weights are in the torch hub cache (if not, said why)."""
    from metrics.lpips import backbone_weights_path  # lpips loads torchvision; only for the LPIPS column

    try:
        backbone_weights_path("alex")
    except FileNotFoundError as err:
        print(f"LPIPS left out: {str(err).split('. ')[0]}")
        return False
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description="Train, test, score and show the demo model at 16x16 -> 128x128")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--iterations", type=int, default=None, help="override train.iterations (tiny runs)")
    p.add_argument("--test-images", type=int, default=8, help="held-out sample crops to test on")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--no-lpips", action="store_true", help="leave LPIPS out even when its weights are present")
    args = p.parse_args(argv)
    if args.test_images < 1 or (args.iterations is not None and args.iterations < 1):
        p.error(f"--test-images and --iterations must be >= 1, got {args.test_images}, {args.iterations}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    overrides = list(args.set) + ([f"train.iterations={args.iterations}"] if args.iterations else [])
    cfg = load_config(args.config, overrides)  # a bad config fails here, before anything is moved
    run_dir = Path(cfg["paths"]["experiments_root"]) / cfg["name"]
    before = runs_aside(run_dir)
    start = time.perf_counter()
    if train.main(["--config", args.config, "--overwrite"] + (["--set", *overrides] if overrides else [])):
        raise RuntimeError(f"training failed; see {run_dir / 'train.log'}")
    train_s = time.perf_counter() - start
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    trained, wanted = load_checkpoint(checkpoint)["iteration"], cfg["train"]["iterations"]
    if wanted is not None and trained < wanted:
        raise RuntimeError(
            f"demo interrupted: training stopped at iteration {trained} of {wanted} ({checkpoint}); "
            "nothing was tested, run the demo again to train it in full"
        )
    moved = next(iter(runs_aside(run_dir) - before), None)
    if moved is not None:
        print(f"previous run {run_dir} moved aside to {moved} (nothing deleted)")

    demo_dir = run_dir / "demo"
    hr_dir, lr_dir, bicubic_dir = write_heldout(
        demo_dir,
        count=args.test_images,
        hr_size=cfg["data"]["val"]["hr_size"],
        scale=cfg["scale"],
        kernel=cfg["data"]["val"]["resize_kernel"],
    )
    sr_out = demo_dir / "sr"
    sr_dir = sr_out / "images"  # test.py's PNGs; results.csv / summary.json sit beside them in sr_out
    _test_script().main(
        ["--checkpoint", str(checkpoint), "--lr-dir", str(lr_dir), "--hr-dir", str(hr_dir)]
        + ["--out-dir", str(sr_out), "--device", "cpu", "--no-progress"]
    )
    model_name = f"{cfg['model']['name']} (demo)"
    methods = [("Bicubic", bicubic_dir), (model_name, sr_dir)]
    scorers = compare.default_scorers({"lpips": not args.no_lpips and lpips_available()})
    result = compare.compare(
        methods, hr_dir, demo_dir / "results", lr_dir=lr_dir, max_images=min(4, args.test_images), tile=256,
        scorers=scorers,
    )  # fmt: skip
    borders = {name: border_errors(folder, hr_dir) for name, folder in methods}
    border_md = border_table(borders)
    (demo_dir / "results" / "border.md").write_text(border_md)
    img = Image.open(result["paths"]["figure"])
    print(
        f"\ntrained {trained} iterations in {train_s:.0f} s; "
        f"{args.test_images} held-out faces (sample 'val' split), fsr convention\n"
    )
    print(compare.markdown_table(result["table"]))
    print(border_md)
    bic_band, sr_band = borders["Bicubic"]["band_mean"], borders[model_name]["band_mean"]
    verdict = "met" if sr_band <= bic_band else "NOT met (see README, 'Border artefacts')"
    print(
        f"border check (model's mean |SR - HR| in the outer {BAND}-px band <= bicubic's): {sr_band:.2f} vs {bic_band:.2f}, {verdict}"
    )
    print(f"table: {result['paths']['markdown']} (LaTeX: {result['paths']['latex']})")
    print(f"figure ({img.width}x{img.height}, LR | Bicubic | SR | HR): {result['paths']['figure']}")
    return {**result, "borders": borders, "train_seconds": train_s, "moved": moved, "run_dir": run_dir}


if __name__ == "__main__":
    sys.exit(run_cli(main))
