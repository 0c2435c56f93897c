"""Pixel-domain VIF (VIFp, Sheikh & Bovik) on luminance: 4 scales, sigma_nsq = 2.

Follows the authors' ``vifp_mscale.m``: at scale s = 1..4 a normalised Gaussian window of size
N = 2^(5-s) + 1 and std N/5 ('valid' filtering); from scale 2 on the images are filtered with
that window and subsampled by 2 first. Local variances give the gain g and the distortion
variance sv^2; VIF = sum log10(1 + g^2 s_ref^2 / (sv^2 + sigma_nsq)) / sum log10(1 + s_ref^2 / sigma_nsq)
over all positions and scales. Needs images of at least 41x41.

Luminance (``channel``): ``gray`` (default) is 0.299 R + 0.587 G + 0.114 B on 0..255 RGB, the
grey image of the original VIF and of piq's ``vif_p`` on RGB input; ``y`` is the float (not
truncated) Y of the fsr convention, 16 + RGB . [65.481, 128.553, 24.966] / 255, i.e. 219/255
times the grey level plus an offset; VIF ignores the offset but not the scale (sigma_nsq is
absolute), so the two differ by a few percent. No paper fixes the convention (RHMC's code has no
VIF), so every output names the channel. piq fed the same luminance as a one-channel image
with ``data_range=255`` computes the same quantity (its only other difference: eps 1e-8 instead
of 1e-10 for the flat-region tests).

A reference with no variance anywhere (flat image) has VIF 0/0: NaN, reported as NaN with the
file named and left out of folder means (averaging rule in ``metrics.io``).

Script: ``python -m metrics.vif --pred-dir P --gt-dir G [--vif-channel gray|y] [--csv FILE]``
(default CSV: ``<pred_dir>_vif_<channel>.csv`` beside the folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path (python metrics/x.py): the repository root first, not metrics/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import math

import numpy as np

from metrics.io import default_csv, score_and_report
from metrics.psnr_ssim import filter_valid, gaussian_1d, rgb_to_y
from utils.cli import ArgumentParser, run_cli

MIN_SIZE = 41
EPS = 1e-10
CHANNELS = ("gray", "y")
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def vifp(dist: np.ndarray, ref: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """VIFp of a distorted luminance image against its reference (2D float arrays, 0..255 scale); NaN for a flat reference."""
    if dist.shape != ref.shape or dist.ndim != 2:
        raise ValueError(f"vifp expects two 2D images of the same size, got {dist.shape} and {ref.shape}")
    if min(dist.shape) < MIN_SIZE:
        raise ValueError(f"VIF needs images of at least {MIN_SIZE}x{MIN_SIZE}, got {dist.shape[1]}x{dist.shape[0]}")
    ref, dist = ref.astype(np.float64), dist.astype(np.float64)
    num = den = 0.0
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1
        k = gaussian_1d(size, size / 5)
        if scale > 1:
            ref, dist = filter_valid(ref, k)[::2, ::2], filter_valid(dist, k)[::2, ::2]
        mu1, mu2 = filter_valid(ref, k), filter_valid(dist, k)
        s1 = np.maximum(filter_valid(ref * ref, k) - mu1 * mu1, 0)
        s2 = np.maximum(filter_valid(dist * dist, k) - mu2 * mu2, 0)
        s12 = filter_valid(ref * dist, k) - mu1 * mu2
        g = s12 / (s1 + EPS)
        sv = s2 - g * s12
        flat_ref = s1 < EPS
        g[flat_ref] = 0
        sv[flat_ref] = s2[flat_ref]
        s1[flat_ref] = 0
        flat_dist = s2 < EPS
        g[flat_dist] = 0
        sv[flat_dist] = 0
        negative = g < 0
        sv[negative] = s2[negative]
        g[negative] = 0
        sv = np.maximum(sv, EPS)
        num += np.log10(1 + g * g * s1 / (sv + sigma_nsq)).sum()
        den += np.log10(1 + s1 / sigma_nsq).sum()
    return float(num / den) if den > 0 else math.nan


def luminance(img: np.ndarray, channel: str = "gray") -> np.ndarray:
    """Float luminance of an HxWx3 uint8 RGB image: ``gray`` (0.299 R + 0.587 G + 0.114 B) or ``y`` (16..235)."""
    if channel not in CHANNELS:
        raise ValueError(f"VIF channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    return img.astype(np.float64) @ GRAY_WEIGHTS if channel == "gray" else rgb_to_y(img, "basicsr")


def calculate_vif(pred: np.ndarray, gt: np.ndarray, sigma_nsq: float = 2.0, channel: str = "gray") -> float:
    """VIFp of two HxWx3 uint8 RGB images on their luminance (prediction is the distorted one)."""
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt sizes differ: {pred.shape} vs {gt.shape}")
    return vifp(luminance(pred, channel), luminance(gt, channel), sigma_nsq)


def describe(channel: str = "gray") -> str:
    """One line naming the VIF variant and its luminance."""
    lum = "grey 0.299R+0.587G+0.114B" if channel == "gray" else "float Y = 16 + RGB.[65.481,128.553,24.966]/255"
    return f"VIFp (4 scales, sigma_nsq=2) on {lum} (vif_channel={channel})"


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = ArgumentParser(description="Pixel-domain VIF between two image folders paired by file name")
    parser.add_argument("--pred-dir", required=True)
    parser.add_argument("--gt-dir", required=True)
    parser.add_argument("--vif-channel", choices=CHANNELS, default="gray", help="luminance VIF is computed on")
    parser.add_argument("--csv", default=None, help="per-image CSV (default: <pred_dir>_vif_<channel>.csv beside it)")
    args = parser.parse_args(argv)
    csv_path = Path(args.csv) if args.csv else default_csv(args.pred_dir, f"vif_{args.vif_channel}")

    def score(p: np.ndarray, g: np.ndarray) -> float:
        return calculate_vif(p, g, channel=args.vif_channel)

    extra = {"vif_channel": args.vif_channel}
    return score_and_report(
        args.pred_dir,
        args.gt_dir,
        {"vif": score},
        csv_path=csv_path,
        convention=describe(args.vif_channel),
        extra=extra,
    )


if __name__ == "__main__":
    run_cli(main)
