"""PSNR / SSIM conventions against hand-computed values and a window-loop SSIM oracle."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from metrics.io import finite_mean, pair_folders, read_rgb
from metrics.psnr_ssim import calculate_psnr, calculate_ssim, main, rgb_to_y, ssim_matlab, tensor_to_uint8


def gray(value: int, size: int = 4) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def test_y_formula_and_truncation():
    # Y of grey v is 16 + 219 v / 255: 100 -> 101.88 (truncated 101), 99 -> 101.02 (101), 110 -> 110.47 (110)
    assert rgb_to_y(gray(100))[0, 0] == 101
    assert rgb_to_y(gray(99))[0, 0] == 101
    assert rgb_to_y(gray(110))[0, 0] == 110
    assert rgb_to_y(gray(100), "basicsr")[0, 0] == pytest.approx(16 + 219 * 100 / 255)
    px = np.array([[[10, 200, 30]]], dtype=np.uint8)
    assert rgb_to_y(px, "basicsr")[0, 0] == pytest.approx(16 + (10 * 65.481 + 200 * 128.553 + 30 * 24.966) / 255)


def test_psnr_one_pixel_by_hand():
    gt = gray(100)
    pred = gt.copy()
    pred[2, 1] = 110  # Y 110 vs 101: error 9 in 1 of 16 pixels
    assert calculate_psnr(pred, gt) == pytest.approx(10 * math.log10(255**2 / (81 / 16)))
    # float Y: error 219 * 10 / 255
    mse = (219 * 10 / 255) ** 2 / 16
    assert calculate_psnr(pred, gt, "basicsr") == pytest.approx(10 * math.log10(255**2 / mse))


def test_truncation_changes_the_number():
    # grey 99 vs 100: truncated Y both 101 -> identical (inf); rounding would give 101 vs 102, float Y differs by 219/255
    assert calculate_psnr(gray(99), gray(100)) == math.inf
    assert calculate_psnr(gray(99), gray(100), "basicsr") == pytest.approx(10 * math.log10(255**2 / (219 / 255) ** 2))


def test_identical_images_inf_and_finite_mean():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert calculate_psnr(img, img) == math.inf
    assert calculate_ssim(img, img) == pytest.approx(1.0)
    assert finite_mean([30.0, math.inf, 20.0]) == (25.0, 1)
    assert finite_mean([math.inf]) == (math.inf, 1)


def test_crop_border_removes_border_errors():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    pred = gt.copy()
    pred[0, :] = 255 - pred[0, :]
    pred[:, -1] = 255 - pred[:, -1]
    assert math.isfinite(calculate_psnr(pred, gt, "basicsr", crop_border=0))
    assert calculate_psnr(pred, gt, "basicsr", crop_border=1) == math.inf
    assert calculate_ssim(pred, gt, "basicsr", crop_border=0) < 1.0
    assert calculate_ssim(pred, gt, "basicsr", crop_border=1) == pytest.approx(1.0)


def ssim_window_loop(a: np.ndarray, b: np.ndarray) -> float:
    """Oracle: SSIM by explicit 11x11 Gaussian windows over every 'valid' position."""
    x = np.arange(11) - 5
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w = g / g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
            cov = (w * pa * pb).sum() - ma * mb
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_both_conventions_against_window_loop():
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 256, (18, 20, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-40, 41, gt.shape), 0, 255).astype(np.uint8)
    fy_p, fy_g = rgb_to_y(pred, "basicsr"), rgb_to_y(gt, "basicsr")
    assert calculate_ssim(pred, gt, "basicsr") == pytest.approx(ssim_window_loop(fy_p, fy_g), abs=1e-10)
    ty_p, ty_g = rgb_to_y(pred).astype(float), rgb_to_y(gt).astype(float)
    assert calculate_ssim(pred, gt) == pytest.approx(ssim_window_loop(ty_p, ty_g), abs=1e-10)
    assert ssim_matlab(ty_p, ty_g) == pytest.approx(calculate_ssim(pred, gt), abs=1e-10)
    assert calculate_ssim(pred, gt, "basicsr") != pytest.approx(calculate_ssim(pred, gt), abs=1e-6)


def test_input_checks():
    with pytest.raises(ValueError, match="uint8"):
        calculate_psnr(gray(1).astype(np.float32), gray(1))
    with pytest.raises(ValueError, match="sizes differ"):
        calculate_psnr(gray(1, 4), gray(1, 5))
    with pytest.raises(ValueError, match="convention"):
        calculate_ssim(gray(1), gray(1), convention="matlab")


def test_tensor_to_uint8():
    t = torch.tensor([-0.1, 0.2, 0.5, 1.2]).view(1, 2, 2).repeat(3, 1, 1)
    out = tensor_to_uint8(t)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[:, :, 0].tolist() == [[0, 51], [128, 255]]
    assert tensor_to_uint8(t[None]).shape == (1, 2, 2, 3)


def save(path, arr):
    Image.fromarray(arr).save(path)


def test_pairing_errors(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    save(pred / "a.png", gray(5))
    save(pred / "b.png", gray(5))
    save(gt / "A.png", gray(5))
    save(gt / "a.PNG", gray(5))
    save(gt / "c.bmp", gray(5))
    with pytest.raises(ValueError, match=r"only in predictions \(1\): b; only in ground truth \(2\): A, c"):
        pair_folders(pred, gt)
    with pytest.raises(FileNotFoundError, match="nope"):
        pair_folders(tmp_path / "nope", gt)
    (pred / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        read_rgb(pred / "bad.png")


def test_script_csv_and_size_error(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(3)
    imgs = {s: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for s in ("x", "y")}
    for stem, img in imgs.items():
        save(gt / f"{stem}.png", img)
    save(pred / "x.png", imgs["x"])  # identical -> inf
    noisy = np.clip(imgs["y"].astype(int) + 9, 0, 255).astype(np.uint8)
    save(pred / "y.png", noisy)
    summary = main(["--pred_dir", str(pred), "--gt_dir", str(gt), "--csv", str(tmp_path / "m.csv")])
    out = capsys.readouterr().out
    assert "convention: fsr" in out and "PSNR=inf" in out
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [r["name"] for r in rows] == ["x", "y"]
    assert float(rows[0]["psnr"]) == math.inf
    expected_y = calculate_psnr(noisy, imgs["y"])
    assert float(rows[1]["psnr"]) == pytest.approx(expected_y)
    assert summary["psnr"] == pytest.approx(expected_y) and summary["psnr_inf_count"] == 1
    save(pred / "y.png", noisy[:15])
    with pytest.raises(ValueError, match=r"y.png.*16x15.*16x16"):
        main(["--pred_dir", str(pred), "--gt_dir", str(gt), "--csv", str(tmp_path / "m.csv")])
