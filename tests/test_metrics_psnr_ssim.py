"""PSNR / SSIM conventions against hand-computed values, the published Y formula and a window-loop SSIM oracle."""

from __future__ import annotations

import csv
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import metrics.io as mio
from metrics.io import finite_mean, summarize
from metrics.psnr_ssim import calculate_psnr, calculate_ssim, main, rgb_to_y, ssim_matlab
from metrics.tensor import tensor_to_uint8
from utils.image_io import pair_folders, read_rgb

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_X1000 = np.array([65481, 128553, 24966], dtype=np.int32)  # the Y weights as exact integers / 1000


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


def colour_planes():
    """Every 8-bit RGB colour once: 256 images of 256x256 (red fixed, green down, blue across)."""
    v = np.arange(256, dtype=np.uint8)
    g, b = np.meshgrid(v, v, indexing="ij")
    for r in range(256):
        yield np.stack([np.full_like(g, r), g, b], axis=-1)


def published_y(img: np.ndarray) -> np.ndarray:
    """The papers' rgb2y as specified: weights divided by 255 first, matmul, + 16, truncated to uint8."""
    return (16 + np.matmul(img, np.array([65.481, 128.553, 24.966]) / 255.0)).astype(np.uint8)


def test_fsr_y_every_colour():
    decisive, changed, former_off_integer = [], 0, 0
    for img in colour_planes():
        ours = rgb_to_y(img)
        # independent oracle in exact integers: Y = 16 + S / 255000 with S = 1000 * (w . rgb)
        s = img.astype(np.int32) @ WEIGHTS_X1000
        exact_floor = 16 + s // 255000
        on_integer = s % 255000 == 0  # exact Y is an integer: float rounding decides between n and n - 1
        assert np.array_equal(ours[~on_integer], exact_floor[~on_integer])
        assert np.isin(exact_floor[on_integer] - ours[on_integer], (0, 1)).all()
        assert np.array_equal(ours, published_y(img))  # bit-exact with the published order, this numpy
        decisive.extend(img[on_integer])
        # the former order (rgb @ w) / 255 truncates some decisive colours differently
        former = (16.0 + img.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0).astype(np.uint8)
        changed += int((former != ours).sum())
        former_off_integer += int(((former != ours) & ~on_integer).sum())
    assert len(decisive) == 206  # all other 16,777,010 colours are exactly the integer oracle
    assert 0 < changed <= 206 and former_off_integer == 0  # 66 with OpenBLAS on x86-64
    # the decisive colours inside images of other shapes (numpy takes other BLAS paths, e.g. width 1)
    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (1, 2), (3, 5), (7, 128)):
        for colour in decisive[::7]:
            canvas = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            canvas[h // 2, w // 2] = colour
            assert np.array_equal(rgb_to_y(canvas), published_y(canvas))


def test_fsr_y_order_by_hand():
    # 65.481*43 + 128.553*231 + 24.966*189 = 37230 = 146 * 255: exact Y = 162. With the weights divided by
    # 255 first, every product is rounded below its exact value and the sum lands at 161.99999999999997
    # (in any summation order), so the papers' Y is 161; (rgb @ w) / 255 gives 162.0 exactly.
    px = np.array([[[43, 231, 189]]], dtype=np.uint8)
    assert rgb_to_y(px)[0, 0] == 161
    assert int(16.0 + px[0, 0].astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0) == 162
    # 65.481*66 + 128.553*104 + 24.966*37 = 18615 = 73 * 255: exact 89, papers 89, the former order 88
    px = np.array([[[66, 104, 37]]], dtype=np.uint8)
    assert rgb_to_y(px)[0, 0] == 89
    assert int(16.0 + px[0, 0].astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0) == 88


def test_fsr_psnr_float32_like_the_papers():
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    yp, yg = rgb_to_y(pred).astype(np.float32), rgb_to_y(gt).astype(np.float32)
    mse32 = np.mean(np.square(yp - yg))  # float32 mean, as their script
    assert mse32.dtype == np.float32
    expected = float(np.float32(10) * np.log10(np.float32(65025) / mse32))
    assert calculate_psnr(pred, gt) == expected  # bit-exact
    exact = 10 * math.log10(65025 / np.mean((yp.astype(np.float64) - yg) ** 2))
    assert calculate_psnr(pred, gt) == pytest.approx(exact, rel=1e-6)


def test_identical_images_inf_and_finite_mean():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert calculate_psnr(img, img) == math.inf
    assert calculate_ssim(img, img) == pytest.approx(1.0)
    assert finite_mean([30.0, math.inf, 20.0]) == (25.0, 1)
    mean, left_out = finite_mean([30.0, math.nan, 20.0, 40.0, -math.inf])
    assert mean == 30.0 and left_out == 2
    assert math.isnan(finite_mean([math.inf])[0]) and math.isnan(finite_mean([])[0])


def test_averaging_rule_names_left_out_images():
    rows = [
        {"name": "a", "psnr": 30.0, "vif": 0.5},
        {"name": "b", "psnr": math.inf, "vif": 0.7},
        {"name": "c", "psnr": 20.0, "vif": math.nan},
        {"name": "d", "psnr": math.nan, "vif": 0.3},
    ]
    summary = summarize(rows, ["psnr", "vif"])
    assert summary["count"] == 4
    assert summary["psnr"] == 25.0 and summary["psnr_excluded"] == {"b": "inf", "d": "nan"}
    assert summary["vif"] == pytest.approx(0.5) and summary["vif_excluded"] == {"c": "nan"}
    lines = mio.format_summary(summary, ["psnr", "vif"])
    assert "PSNR: 25.0000" in lines[0] and "VIF: 0.5000" in lines[0]
    assert "PSNR: 2 of 4 image(s) not finite" in lines[1] and "b (inf), d (nan)" in lines[1]
    assert "VIF: 1 of 4" in lines[2] and "c (nan)" in lines[2]
    only_inf = summarize([{"name": "x", "psnr": math.inf}], ["psnr"])
    assert math.isnan(only_inf["psnr"]) and only_inf["psnr_excluded"] == {"x": "inf"}


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


def test_tensor_to_uint8_round_and_truncate():
    t = torch.tensor([-0.1, 0.5, 0.999, 1.2]).view(1, 2, 2).repeat(3, 1, 1)
    out = tensor_to_uint8(t)  # x255: -25.5, 127.5, 254.745, 306
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[:, :, 0].tolist() == [[0, 128], [255, 255]]
    assert tensor_to_uint8(t, "truncate")[:, :, 0].tolist() == [[0, 127], [254, 255]]
    assert tensor_to_uint8(t[None]).shape == (1, 2, 2, 3)
    # truncate equals the papers' numpy expression, float32 throughout
    x = torch.rand(3, 16, 16) * 1.2 - 0.1
    papers = np.clip(x.permute(1, 2, 0).numpy() * 255.0, 0, 255).astype(np.uint8)
    assert np.array_equal(tensor_to_uint8(x, "truncate"), papers)
    with pytest.raises(ValueError, match="quantize"):
        tensor_to_uint8(t, "floor")


def test_psnr_ssim_does_not_import_torch():
    code = "import sys, metrics.psnr_ssim, metrics.vif; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "metrics.psnr_ssim", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "--pred-dir" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "skimage" in imported and "torch" not in imported


def png16(path: Path, arr: np.ndarray) -> None:
    """Hand-written 16-bit PNG (grey HxW or RGB HxWx3), rows alternating filter None and Sub."""
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    bpp = 2 * channels
    rows = []
    for i in range(h):
        raw = np.frombuffer(arr[i].astype(">u2").tobytes(), dtype=np.uint8).astype(np.int64)
        if i % 2:
            prev = np.concatenate([np.zeros(bpp, np.int64), raw[:-bpp]])
            rows.append(b"\x01" + ((raw - prev) % 256).astype(np.uint8).tobytes())
        else:
            rows.append(b"\x00" + raw.astype(np.uint8).tobytes())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 0 if channels == 1 else 2, 0, 0, 0)
    data = b"".join(rows)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")
    )


def test_16bit_png_scaled_not_clipped(tmp_path):
    values = np.array([[0, 128, 129, 385], [1000, 40000, 65400, 65535]], dtype=np.uint16)
    by_hand = np.array([[0, 0, 1, 1], [4, 156, 254, 255]])  # round(v / 257): 128 -> 0.498, 129 -> 0.502, ...
    png16(tmp_path / "g.png", values)
    with Image.open(tmp_path / "g.png") as img:
        assert img.mode.startswith("I;16")  # Pillow's convert("RGB") would clip all but 0 to 255
    grey = read_rgb(tmp_path / "g.png")
    assert grey.shape == (2, 4, 3) and np.array_equal(grey[..., 1], by_hand)
    rgb = np.stack([values, values[::-1], 65535 - values], axis=-1)
    png16(tmp_path / "c.png", rgb)
    got = read_rgb(tmp_path / "c.png")  # Pillow alone keeps the high byte: 1000 -> 3, 65400 -> 255
    assert np.array_equal(got[..., 0], by_hand) and np.array_equal(got[..., 1], by_hand[::-1])
    assert np.array_equal(got[..., 2], np.floor((65535 - values) / 257 + 0.5))
    big = np.random.default_rng(0).integers(0, 65536, (9, 7, 3)).astype(np.uint16)
    png16(tmp_path / "r.png", big)
    assert np.array_equal(read_rgb(tmp_path / "r.png"), np.floor(big / 257 + 0.5).astype(np.uint8))
    Image.fromarray(np.zeros((2, 2), np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f.tif.*floating-point"):
        read_rgb(tmp_path / "f.tif")


def test_alpha_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 100, 0, 255)  # opaque, a transparent black pixel elsewhere
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_rgb(tmp_path / "a.png")
    assert out[0, 0].tolist() == [200, 100, 0] and out[1, 1].tolist() == [255, 255, 255]


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
    with pytest.raises(
        ValueError,
        match=r"1 prediction name\(s\) without ground-truth \[b\]; 2 ground-truth name\(s\) without prediction \[A, c\]",
    ):
        pair_folders(pred, gt)
    with pytest.raises(FileNotFoundError, match="nope"):
        pair_folders(tmp_path / "nope", gt)
    (pred / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        read_rgb(pred / "bad.png")


def score_dirs(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
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
    return pred, gt, noisy, imgs["y"]


def test_script_csv_beside_folder_and_size_error(tmp_path, capsys):
    pred, gt, noisy, clean = score_dirs(tmp_path)
    before = sorted(p.name for p in pred.iterdir())
    summary = main(["--pred_dir", str(pred), "--gt_dir", str(gt)])
    out = capsys.readouterr().out
    assert "convention: fsr" in out and "PSNR: 1 of 2 image(s) not finite" in out and "x (inf)" in out
    assert sorted(p.name for p in pred.iterdir()) == before  # nothing written into the prediction folder
    rows = list(csv.DictReader(open(tmp_path / "pred_psnr_ssim_fsr.csv")))
    assert [r["name"] for r in rows] == ["x", "y"]
    assert float(rows[0]["psnr"]) == math.inf
    expected_y = calculate_psnr(noisy, clean)
    assert float(rows[1]["psnr"]) == expected_y
    assert summary["psnr"] == expected_y and summary["psnr_excluded"] == {"x": "inf"}
    assert summary["ssim"] == pytest.approx((1.0 + calculate_ssim(noisy, clean)) / 2)
    main(["--pred_dir", str(pred), "--gt_dir", str(gt), "--csv", str(tmp_path / "m.csv"), "--convention", "basicsr"])
    assert (tmp_path / "m.csv").is_file()
    save(pred / "y.png", noisy[:15])
    with pytest.raises(ValueError, match=r"y.png.*16x15.*16x16"):
        main(["--pred_dir", str(pred), "--gt_dir", str(gt), "--csv", str(tmp_path / "m.csv")])


def test_script_read_only_destination_loses_nothing(tmp_path, capsys, monkeypatch):
    import os

    pred, gt, noisy, clean = score_dirs(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root ignores the mode bits: make the write fail the way it would
        real_open = Path.open

        def refuse(self, *args, **kwargs):
            if self.parent == locked:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(
        OSError, match=r"cannot write the per-image CSV .*locked/s.csv.*Permission denied.*scores above"
    ):
        main(["--pred_dir", str(pred), "--gt_dir", str(gt), "--csv", str(locked / "s.csv")])
    out = capsys.readouterr().out
    psnr_y = calculate_psnr(noisy, clean)
    assert f"PSNR: {psnr_y:.4f}" in out  # the means were printed before the write ...
    assert f"y,{psnr_y!r}," in out  # ... and the per-image rows after it failed
    assert not (locked / "s.csv").exists()
    locked.chmod(0o755)
