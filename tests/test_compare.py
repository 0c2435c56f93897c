"""metrics.compare: figure geometry and titles, table rows and values, markdown / LaTeX syntax, CLI errors."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrics import compare
from metrics.psnr_ssim import calculate_psnr
from utils import figure

HR, SCALE = 48, 4


def _faces(tmp_path: Path, count: int = 3) -> dict[str, Path]:
    """HR, LR and two prediction folders: 'good' = HR + small noise, 'bad' = HR + strong noise."""
    rng = np.random.default_rng(0)
    dirs = {k: tmp_path / k for k in ("HR", "LR", "good", "bad")}
    for d in dirs.values():
        d.mkdir()
    yy, xx = np.mgrid[:HR, :HR]
    for i in range(count):
        hr = np.stack([(xx * 5 + i * 20) % 256, (yy * 5) % 256, (xx + yy + 40 * i) % 256], -1).astype(np.uint8)
        Image.fromarray(hr).save(dirs["HR"] / f"img{i}.png")
        Image.fromarray(hr).resize((HR // SCALE, HR // SCALE), Image.Resampling.BICUBIC).save(
            dirs["LR"] / f"img{i}.png"
        )
        for name, sigma in (("good", 3.0), ("bad", 25.0)):
            noisy = np.clip(hr + rng.normal(0, sigma, hr.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(dirs[name] / f"img{i}.png")
    (dirs["good"] / "results.csv").write_text("name,psnr\n")  # test.py's side files are ignored
    return dirs


def test_compare_figure_and_tables(tmp_path):
    dirs = _faces(tmp_path)
    methods = [("Bad_method", dirs["bad"]), ("Good", dirs["good"])]
    out = compare.compare(methods, dirs["HR"], tmp_path / "out", lr_dir=dirs["LR"], max_images=2, tile=64)

    # table: one row per method, in order, means of the per-image metric functions
    table = out["table"]
    assert [row["method"] for row in table] == ["Bad_method", "Good"]
    expected = np.mean(
        [
            calculate_psnr(
                np.asarray(Image.open(dirs["good"] / f"img{i}.png")), np.asarray(Image.open(dirs["HR"] / f"img{i}.png"))
            )
            for i in range(3)
        ]
    )
    assert table[1]["psnr"] == pytest.approx(expected)
    assert table[1]["count"] == 3
    assert (
        table[1]["psnr"] > table[0]["psnr"] + 5
        and table[1]["ssim"] > table[0]["ssim"]
        and table[1]["vif"] > table[0]["vif"]
    )

    # figure: 2 rows (max_images) x 4 columns (LR, two methods, HR) of 64 px tiles plus titles
    img = Image.open(out["paths"]["figure"])
    assert img.width >= 4 * 64 and img.width < 5 * 64
    assert 2 * 64 < img.height < 3 * 64
    assert out["images"] == ["img0", "img1"]
    arr = np.asarray(img)
    title_band = arr[: arr.shape[0] - 2 * 64 - 2 * 6]
    assert (title_band < 128).any(), "column titles are drawn"
    # the last column of the last row is the HR image, nearest-resized to the tile
    hr0 = np.asarray(Image.open(dirs["HR"] / "img0.png").resize((64, 64), Image.Resampling.NEAREST))
    x0 = 6 + 3 * (64 + 6)
    y0 = img.height - 2 * (64 + 6)
    assert np.array_equal(arr[y0 : y0 + 64, x0 : x0 + 64], hr0)

    # markdown: header + separator + one row per method, best (Good) in bold
    md = out["paths"]["markdown"].read_text().strip().splitlines()
    assert md[0] == "| Method | PSNR (dB) | SSIM | VIF |"
    assert md[1] == "|---|---|---|---|"
    assert len(md) == 4 and md[2].startswith("| Bad_method |") and md[3].startswith("| Good |")
    assert md[3].count("**") == 6 and "**" not in md[2]
    assert all(line.count("|") == 5 for line in md)

    # LaTeX: balanced environments, 4 columns per row, escaped underscore, best bold
    tex = out["paths"]["latex"].read_text()
    assert tex.count(r"\begin{") == tex.count(r"\end{") == 2
    assert r"\begin{tabular}{lccc}" in tex
    rows = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert len(rows) == 3 and all(line.count("&") == 3 for line in rows)
    assert rows[1].startswith(r"Bad\_method &") and rows[2].count(r"\textbf{") == 3
    assert re.search(r"PSNR\$\\uparrow\$", tex)

    # per-image CSV: methods x images
    with out["paths"]["csv"].open() as handle:
        assert len(list(csv.DictReader(handle))) == 6


def test_crop_box_and_inset(tmp_path):
    dirs = _faces(tmp_path, 1)
    plain = compare.comparison_figure([("Good", dirs["good"])], dirs["HR"], ["img0"], tile=96)
    boxed = compare.comparison_figure([("Good", dirs["good"])], dirs["HR"], ["img0"], crop=(4, 4, 12, 12), tile=96)
    assert plain.size == boxed.size
    red = np.all(np.asarray(boxed) == figure.BOX_COLOR, axis=-1)
    assert red.sum() > 4 * 12 * 2 and not np.all(np.asarray(plain) == figure.BOX_COLOR, axis=-1).any()
    with pytest.raises(ValueError, match="does not fit"):
        compare.comparison_figure([("Good", dirs["good"])], dirs["HR"], ["img0"], crop=(40, 40, 20, 20), tile=96)


def test_cli_errors_and_output(tmp_path, capsys):
    dirs = _faces(tmp_path, 2)
    with pytest.raises(ValueError, match="NAME=DIR"):
        compare.parse_method("no_equals_sign")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compare.parse_method(f"X={tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="must differ"):
        compare.compare([("A", dirs["good"]), ("A", dirs["bad"])], dirs["HR"], tmp_path / "o")
    (dirs["bad"] / "img1.png").unlink()
    with pytest.raises(ValueError, match="do not pair"):
        compare.compare([("A", dirs["bad"])], dirs["HR"], tmp_path / "o")
    compare.main(["--gt_dir", str(dirs["HR"]), "--method", f"Good={dirs['good']}", "--out_dir", str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    assert "| Good |" in printed and f"figure: {tmp_path / 'cli' / 'figure.png'}" in printed
