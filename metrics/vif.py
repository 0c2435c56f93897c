"""Pixel-domain VIF (VIFp, Sheikh & Bovik) on luminance: 4 scales, sigma_nsq = 2.

Follows the authors' ``vifp_mscale.m``: at scale s = 1..4 a normalised Gaussian window of size
N = 2^(5-s) + 1 and std N/5 ('valid' filtering); from scale 2 on the images are filtered with
that window and subsampled by 2 first. Local variances give the gain g and the distortion
variance sv^2; VIF = sum log10(1 + g^2 s_ref^2 / (sv^2 + sigma_nsq)) / sum log10(1 + s_ref^2 / sigma_nsq)
over all positions and scales. Needs images of at least 41x41.

Luminance: the float (not truncated) Y of the fsr convention, 16 + RGB . [65.481, 128.553,
24.966] / 255 on 0..255 RGB. piq's ``vif_p`` on RGB uses full-range Y = 0.299 R + 0.587 G +
0.114 B instead, i.e. 255/219 times our Y minus its offset; VIF ignores the offset but not the
scale (sigma_nsq is absolute), so the two differ slightly. piq fed our Y as a one-channel
image with ``data_range=255`` computes the same quantity (its only other difference: eps 1e-8
instead of 1e-10 for the flat-region tests).

Script: ``python -m metrics.vif --pred_dir P --gt_dir G``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metrics.io import score_and_report
from metrics.psnr_ssim import filter_valid, gaussian_1d, rgb_to_y
from utils.cli import run_cli

MIN_SIZE = 41
EPS = 1e-10


def vifp(dist: np.ndarray, ref: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """VIFp of a distorted luminance image against its reference (2D float arrays, 0..255 scale)."""
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
    return float(num / den)


def calculate_vif(pred: np.ndarray, gt: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """VIFp of two HxWx3 uint8 RGB images on the float fsr luminance (prediction is the distorted one)."""
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt sizes differ: {pred.shape} vs {gt.shape}")
    return vifp(rgb_to_y(pred, "basicsr"), rgb_to_y(gt, "basicsr"), sigma_nsq)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description="Pixel-domain VIF between two image folders paired by file name")
    parser.add_argument("--pred_dir", required=True)
    parser.add_argument("--gt_dir", required=True)
    parser.add_argument("--csv", default=None, help="per-image CSV (default: <pred_dir>/vif.csv)")
    args = parser.parse_args(argv)
    csv_path = Path(args.csv or Path(args.pred_dir) / "vif.csv")
    convention = "VIFp (4 scales, sigma_nsq=2) on float Y = 16 + RGB.w/255"
    return score_and_report(args.pred_dir, args.gt_dir, {"vif": calculate_vif}, csv_path, convention)


if __name__ == "__main__":
    run_cli(main)
