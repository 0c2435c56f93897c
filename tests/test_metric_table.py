"""metrics.table: one entry is all a new metric needs; test.py, metrics.compare, bench.ablations / bench.table1 and
validation pick it up from there. The table's facts themselves (headers, directions, conventions) as the tables
and summaries printed them before the table existed."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import ablations, table1
from metrics import compare
from metrics import table as metric_table
from metrics.psnr_ssim import calculate_psnr, describe

ROOT = Path(__file__).resolve().parents[1]


def mean_abs_error(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.abs(pred.astype(np.float64) - gt.astype(np.float64)).mean())


MAE = metric_table.Metric(
    name="mae",
    label="MAE",
    lower_is_better=True,
    optional=True,
    build=lambda get, device: mean_abs_error,
    conventions=lambda get: {"mae_convention": "mean |pred - gt| over RGB uint8"},
    convention_key="mae_convention",
)


@pytest.fixture
def with_mae(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(metric_table.METRICS, "mae", MAE)


def _faces(folder: Path, seed: int, noise: float = 0.0) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(2):
        img = np.clip(rng.normal(128, 40, (48, 48, 3)) + rng.normal(0, noise, (48, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.png")
        images[f"img{i}"] = img
    return images


def test_the_table_holds_what_the_scripts_printed() -> None:
    m = metric_table.METRICS
    assert list(m) == ["psnr", "ssim", "lpips", "vif"] and metric_table.VALIDATION == ("psnr", "ssim")
    assert [m[k].header for k in m] == ["PSNR (dB)", "SSIM", "LPIPS", "VIF"]
    assert [m[k].latex for k in m] == [r"PSNR$\uparrow$", r"SSIM$\uparrow$", r"LPIPS$\downarrow$", r"VIF$\uparrow$"]
    assert m["lpips"].best([0.2, 0.1]) == 0.1 and m["psnr"].best([20.0, 30.0]) == 30.0
    assert m["psnr"].format(21.777) == "21.78" and m["ssim"].format(0.56789) == "0.5679"
    facts = metric_table.conventions(["psnr", "ssim", "vif"], {"convention": "basicsr", "crop_border": 8})
    assert facts["convention"] == describe("basicsr", 8) and facts["vif_channel"] == "gray"
    assert list(metric_table.conventions(["lpips"], {})) == ["lpips_convention"]
    assert metric_table.selected(argparse.Namespace(lpips=False, vif=True)) == ["psnr", "ssim", "vif"]


def test_lpips_without_its_backbone_is_a_footnote(tmp_path: Path) -> None:
    scored, notes = metric_table.status({"lpips_weights": str(tmp_path / "none.pth")})
    assert scored == ["psnr", "ssim", "vif"] and notes["lpips"].startswith("LPIPS not scored (n/a): ")
    assert "none.pth" in notes["lpips"] and "--lpips-weights" in notes["lpips"]


def test_a_new_entry_reaches_compare_and_the_bench_tables(tmp_path: Path, with_mae: None) -> None:
    gt = _faces(tmp_path / "HR", seed=0)
    _faces(tmp_path / "good", seed=0, noise=2.0)
    args = compare.parse_args(["--gt-dir", str(tmp_path / "HR"), "--method", f"Good={tmp_path / 'good'}", "--mae"])
    scorers = compare.default_scorers(args)  # its switch, as --lpips
    out = compare.compare([("Good", tmp_path / "good")], tmp_path / "HR", tmp_path / "out", tile=48, scorers=scorers)
    md = out["paths"]["markdown"].read_text().splitlines()[0]
    assert md == "| Method | PSNR (dB) | SSIM | VIF | MAE |"
    assert r"MAE$\downarrow$" in out["paths"]["latex"].read_text()
    good = np.asarray(Image.open(tmp_path / "good" / "img0.png"))
    rows = compare.score_method(tmp_path / "good", tmp_path / "HR", scorers)
    assert rows[0]["mae"] == pytest.approx(mean_abs_error(good, gt["img0"]))
    assert rows[0]["psnr"] == pytest.approx(calculate_psnr(good, gt["img0"]))

    row = ablations.Row(config="x.yaml", name="x", model="m", scores={"psnr": 20.0, "mae": 1.5})
    text = ablations.render_table([row], [], [], scored=["psnr", "mae"])
    assert "| MAE ↓ |" in text and "| 1.5000 |" in text
    t1 = table1.Row(config="x.yaml", stem="x", model="bicubic", scores={"Helen": {"psnr": 24.0, "mae": 2.0}})
    text = table1.render_table([t1], [], [])
    assert "Helen MAE ↓" in text and "CelebA MAE ↓" in text and "2.0000" in text and "24.00 (24.07)" in text


def test_a_new_entry_is_a_test_py_switch_with_its_column(tmp_path: Path, with_mae: None) -> None:
    spec = importlib.util.spec_from_file_location("fsr_test_script", ROOT / "test.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from model import build_model
    from utils.checkpoint import save_checkpoint
    from utils.config import resolve_config

    cfg = resolve_config({"name": "t", "model": {"name": "bicubic"}, "data": {"val": {"hr_size": 48}}})
    net = build_model(cfg["model"])
    state = {"model_name": "bicubic", "model": net.state_dict(), "ema": None, "config": cfg}
    save_checkpoint({**state, "iteration": 0, "epoch": 0, "best_psnr": None}, tmp_path / "bic.pt")
    gt = _faces(tmp_path / "hr", seed=1)
    argv = ["--checkpoint", str(tmp_path / "bic.pt"), "--lr-dir", str(tmp_path / "hr"), "--degrade"]
    summary = script.main([*argv, "--out-dir", str(tmp_path / "o"), "--device", "cpu", "--no-progress", "--mae"])
    sr = np.asarray(Image.open(tmp_path / "o" / "images" / "img0.png"))
    rows = (tmp_path / "o" / "results.csv").read_text().splitlines()
    assert rows[0] == "name,psnr,ssim,mae"
    assert float(rows[1].split(",")[-1]) == pytest.approx(mean_abs_error(sr, gt["img0"]))
    assert summary["mae_convention"] == "mean |pred - gt| over RGB uint8" and "mae" in summary
    without = script.main([*argv, "--out-dir", str(tmp_path / "p"), "--device", "cpu", "--no-progress"])
    assert "mae" not in without
