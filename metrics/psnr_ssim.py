"""PSNR and SSIM on the Y channel in the two conventions of face SR papers.

``fsr`` (default, the SPARNet-lineage ``psnr_ssim.py`` of the RHMC and HybriMamba releases
behind the published tables), computed with the same numpy operations in the same order so the
numbers are bit-identical to that script's: Y = ``16 + np.matmul(rgb, K)`` with
``K = [65.481, 128.553, 24.966] / 255`` (the weights divided first; ``(rgb @ w) / 255`` truncates
66 of the 16.7M colours to another Y), on the uint8 RGB array, TRUNCATED to uint8; no border
crop; PSNR with peak 255 from a float32 MSE in float32 (as that script under NumPy >= 2); SSIM is
skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255)`` on that Y. The colours whose exact Y is an integer (206 of 16.7M) land on
either side of it depending on how numpy's BLAS evaluates the product, in the papers' script
and here alike.

``basicsr`` (BasicSR ``calculate_psnr/ssim`` with ``test_y_channel=True``): the same Y formula
kept in float (here float64; BasicSR computes it in float32), ``crop_border`` pixels removed
on each side, PSNR with peak 255, MATLAB-style SSIM (11x11 Gaussian window, sigma 1.5,
'valid' filtering, C1 = (0.01*255)^2, C2 = (0.03*255)^2).

Identical images give PSNR = inf; folder means follow the averaging rule of ``metrics.io``
(finite values only; inf and NaN counted and named). No torch import: numpy and scikit-image only.

Script: ``python -m metrics.psnr_ssim --pred-dir P --gt-dir G [--convention fsr|basicsr] [--crop-border N]
[--csv FILE]`` (default CSV: ``<pred_dir>_psnr_ssim_<convention>.csv`` beside the folder); also
``python -m metrics.psnr_ssim GT_DIR SR_DIR`` (HybriMamba's order) and, by path,
``python metrics/calculate_psnr_ssim.py --pred_dir P --gt_dir G`` (RHMC's command).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path (python metrics/x.py): the repository root first, not metrics/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import math

import numpy as np
from scipy.ndimage import correlate1d
from skimage.metrics import structural_similarity

from metrics.io import default_csv, score_and_report
from utils.authors import folder_args
from utils.cli import ArgumentParser, run_cli

CONVENTIONS = ("fsr", "basicsr")
Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
Y_KERNEL = Y_WEIGHTS / 255.0  # divided first, as the papers' rgb2y
CONVENTION_TEXT = {
    "fsr": "fsr: Y = 16 + RGB.([65.481,128.553,24.966]/255) truncated to uint8 (the papers' psnr_ssim.py), "
    "float32 PSNR, no crop, skimage SSIM (gaussian sigma 1.5, population covariance, data_range 255)",
    "basicsr": "basicsr: float Y = 16 + RGB.[65.481,128.553,24.966]/255, crop_border={crop}, "
    "MATLAB SSIM (11x11 gaussian sigma 1.5, valid)",
}


def _check(pred: np.ndarray, gt: np.ndarray, convention: str, crop_border: int) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    for name, img in (("pred", pred), ("gt", gt)):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"{name} must be an HxWx3 uint8 RGB array, got {desc}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt sizes differ: {pred.shape} vs {gt.shape}")
    if crop_border < 0 or 2 * crop_border >= min(pred.shape[:2]):
        raise ValueError(f"crop_border={crop_border} does not fit an image of size {pred.shape[1]}x{pred.shape[0]}")


def rgb_to_y(img: np.ndarray, convention: str = "fsr") -> np.ndarray:
    """Y of an HxWx3 uint8 RGB image: ``16 + rgb @ (w / 255)`` truncated to uint8 (``fsr``) or float64 (``basicsr``)."""
    y = 16 + np.matmul(img, Y_KERNEL)
    return y.astype(np.uint8) if convention == "fsr" else y


def _y_pair(pred: np.ndarray, gt: np.ndarray, convention: str, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    _check(pred, gt, convention, crop_border)
    if crop_border:
        pred = pred[crop_border:-crop_border, crop_border:-crop_border]
        gt = gt[crop_border:-crop_border, crop_border:-crop_border]
    return rgb_to_y(pred, convention), rgb_to_y(gt, convention)


def calculate_psnr(pred: np.ndarray, gt: np.ndarray, convention: str = "fsr", crop_border: int = 0) -> float:
    """PSNR (dB, peak 255) on Y of two HxWx3 uint8 RGB images; inf when the Y channels are equal."""
    y_pred, y_gt = _y_pair(pred, gt, convention, crop_border)
    dtype = np.float32 if convention == "fsr" else np.float64
    mse = np.mean(np.square(y_pred.astype(dtype) - y_gt.astype(dtype)))
    return math.inf if mse == 0 else float(dtype(10) * np.log10(dtype(255**2) / mse))


def gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def filter_valid(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 2D correlation with a symmetric kernel, keeping only the 'valid' region."""
    out = correlate1d(correlate1d(img, kernel, axis=0), kernel, axis=1)
    r = len(kernel) // 2
    return out[r:-r, r:-r]


def ssim_matlab(y_pred: np.ndarray, y_gt: np.ndarray) -> float:
    """MATLAB/BasicSR SSIM of two float images in [0, 255]: 11x11 Gaussian (sigma 1.5), 'valid' map mean."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = gaussian_1d()
    mu1, mu2 = filter_valid(y_pred, k), filter_valid(y_gt, k)
    s11 = filter_valid(y_pred * y_pred, k) - mu1**2
    s22 = filter_valid(y_gt * y_gt, k) - mu2**2
    s12 = filter_valid(y_pred * y_gt, k) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return float(ssim_map.mean())


def calculate_ssim(pred: np.ndarray, gt: np.ndarray, convention: str = "fsr", crop_border: int = 0) -> float:
    """SSIM on Y of two HxWx3 uint8 RGB images in the given convention (see module docstring)."""
    y_pred, y_gt = _y_pair(pred, gt, convention, crop_border)
    if convention == "fsr":
        return float(
            structural_similarity(
                y_gt, y_pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
            )
        )
    return ssim_matlab(y_pred, y_gt)


def describe(convention: str, crop_border: int = 0) -> str:
    """One line saying how the numbers were computed (printed next to every result)."""
    return CONVENTION_TEXT[convention].format(crop=crop_border)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = ArgumentParser(description="PSNR / SSIM on Y between two image folders paired by file name")
    parser.add_argument("--pred-dir", "-restored_folder", default=None, help="super-resolved images")
    parser.add_argument("--gt-dir", "-gt_folder", default=None, help="ground truth, paired by file name")
    parser.add_argument("--convention", choices=CONVENTIONS, default="fsr")
    parser.add_argument("--crop-border", type=int, default=0)
    parser.add_argument(
        "--csv", default=None, help="per-image CSV (default: <pred_dir>_psnr_ssim_<convention>.csv beside the folder)"
    )
    args = folder_args(parser, argv, "GT_DIR SR_DIR")

    def psnr(p: np.ndarray, g: np.ndarray) -> float:
        return calculate_psnr(p, g, args.convention, args.crop_border)

    def ssim(p: np.ndarray, g: np.ndarray) -> float:
        return calculate_ssim(p, g, args.convention, args.crop_border)

    csv_path = Path(args.csv) if args.csv else default_csv(args.pred_dir, f"psnr_ssim_{args.convention}")
    convention = describe(args.convention, args.crop_border)
    metrics = {"psnr": psnr, "ssim": ssim}
    return score_and_report(args.pred_dir, args.gt_dir, metrics, csv_path=csv_path, convention=convention)


if __name__ == "__main__":
    run_cli(main)
