"""test.py / test.sh end to end on tiny checkpoints: outputs, scores, EMA choice, clear errors."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from data.io import DataError
from metrics.psnr_ssim import calculate_psnr, calculate_ssim, tensor_to_uint8
from model.registry import MODEL_REGISTRY, register_model
from model.ss2d import SS2D
from utils.checkpoint import CheckpointError, save_checkpoint
from utils.config import resolve_config

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fsr_test_script", ROOT / "test.py")  # not the stdlib 'test' package
inference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(inference)
SCALE, HR = 4, 48  # 48: VIF needs at least 41x41
TINY = "tiny_ss2d_inference_test"


class TinySR(nn.Module):
    """conv -> SS2D -> conv with a global residual, a few hundred parameters."""

    def __init__(self, width: int = 4, tail_bias: bool = True) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.ss2d = SS2D(width, d_state=2)
        self.tail = nn.Conv2d(width, 3, 3, padding=1, bias=tail_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.ss2d(self.head(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


@pytest.fixture(autouse=True, scope="module")
def tiny_registered():
    register_model(TINY)(TinySR)
    yield
    MODEL_REGISTRY.pop(TINY)


def make_checkpoint(path: Path, model_cfg: dict, ema: bool = False, name: str | None = None) -> dict:
    from model import build_model

    cfg = resolve_config({"scale": SCALE, "model": model_cfg, "data": {"val": {"hr_size": HR}}})
    torch.manual_seed(0)
    net = build_model(cfg["model"])
    ema_state = None
    if ema:
        ema_state = {k: v + 0.05 * torch.randn_like(v) for k, v in net.state_dict().items()}
    state = {"model_name": name or model_cfg["name"], "model": net.state_dict(), "ema": ema_state, "config": cfg}
    state.update({"iteration": 7, "epoch": 0, "optimizer": {}, "scheduler": {}, "scaler": {}, "rng": {}})
    save_checkpoint({**state, "best_psnr": 0.0}, path)
    return state


def faces(folder: Path, count: int, size: int, seed: int = 0, ext: str = "png") -> dict[str, np.ndarray]:
    """Smooth random images (low-frequency noise upsampled) saved under face_<i>.<ext>."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(count):
        small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        img = np.asarray(small.resize((size, size), Image.Resampling.BICUBIC))
        Image.fromarray(img).save(folder / f"face_{i}.{ext}")
        out[f"face_{i}"] = img
    return out


def run(*argv: str) -> dict:
    return inference.main([*argv, "--device", "cpu", "--no_progress"])


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_bicubic_small_lr_scores_match_saved_files(tmp_path):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    hr = faces(tmp_path / "hr", 3, HR)
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    for stem, img in hr.items():  # LR 8x8 as .bmp: pairing is by stem
        Image.fromarray(img).resize((HR // SCALE,) * 2, Image.Resampling.BICUBIC).save(lr_dir / f"{stem}.bmp")
    out = tmp_path / "out"
    summary = run(
        "--checkpoint",
        str(tmp_path / "bic.pt"),
        "--lr_dir",
        str(lr_dir),
        "--hr_dir",
        str(tmp_path / "hr"),
        "--out_dir",
        str(out),
        "--batch_size",
        "2",
    )
    assert sorted(p.name for p in out.glob("*.png")) == [f"{s}.png" for s in sorted(hr)]
    rows = {r["name"]: r for r in csv.DictReader(open(out / "results.csv"))}
    psnrs = []
    for stem, gt in hr.items():
        sr = read_png(out / f"{stem}.png")
        lr = Image.open(lr_dir / f"{stem}.bmp")
        assert np.array_equal(sr, np.asarray(lr.resize((HR, HR), Image.Resampling.BICUBIC)))  # bicubic = identity
        psnrs.append(calculate_psnr(sr, gt))
        assert float(rows[stem]["psnr"]) == pytest.approx(psnrs[-1], rel=1e-9)
        assert float(rows[stem]["ssim"]) == pytest.approx(calculate_ssim(sr, gt), rel=1e-9)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["psnr"] == pytest.approx(np.mean(psnrs)) == pytest.approx(summary["psnr"])
    assert saved["count"] == 3 and saved["inputs"] == ["small"] and saved["convention"].startswith("fsr")
    assert saved["model_name"] == "bicubic" and saved["ms_per_image"] > 0


def test_tiny_ss2d_degrade_uses_ema_by_default(tmp_path):
    from model import build_model

    state = make_checkpoint(tmp_path / "tiny.pt", {"name": TINY}, ema=True)
    hr = faces(tmp_path / "hr", 3, HR, seed=1)
    for flag, key, out in (((), "ema", tmp_path / "o_ema"), (("--no_ema",), "model", tmp_path / "o_raw")):
        summary = run(
            "--checkpoint",
            str(tmp_path / "tiny.pt"),
            "--lr_dir",
            str(tmp_path / "hr"),
            "--degrade",
            "--out_dir",
            str(out),
            "--batch_size",
            "2",
            "--convention",
            "basicsr",
            "--vif",
            *flag,
        )
        assert summary["weights"] == key and summary["inputs"] == ["degraded"]
        net = build_model({"name": TINY})
        net.load_state_dict(state[key])
        for stem, img in hr.items():
            small = Image.fromarray(img).resize((HR // SCALE,) * 2, Image.Resampling.BICUBIC)
            x = torch.from_numpy(np.array(small.resize((HR, HR), Image.Resampling.BICUBIC))).permute(2, 0, 1)
            with torch.no_grad():
                expected = tensor_to_uint8(net(x[None].float() / 255)[0])
            diff = np.abs(read_png(out / f"{stem}.png").astype(int) - expected)
            assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # batched vs single forward: rounding ties only
        assert "vif" in summary and summary["convention"].startswith("basicsr")
    assert not np.array_equal(read_png(tmp_path / "o_ema/face_0.png"), read_png(tmp_path / "o_raw/face_0.png"))


def test_upsampled_lr_without_hr(tmp_path):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    imgs = faces(tmp_path / "lr", 2, HR)
    summary = run(
        "--checkpoint", str(tmp_path / "bic.pt"), "--lr_dir", str(tmp_path / "lr"), "--out_dir", str(tmp_path / "o")
    )
    assert summary["inputs"] == ["upsampled"] and "psnr" not in summary
    assert not (tmp_path / "o" / "results.csv").exists()
    assert np.array_equal(read_png(tmp_path / "o" / "face_1.png"), imgs["face_1"])


def test_errors(tmp_path):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    make_checkpoint(tmp_path / "tiny.pt", {"name": TINY})
    faces(tmp_path / "lr", 1, HR)
    base = ["--lr_dir", str(tmp_path / "lr"), "--out_dir", str(tmp_path / "o")]
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"scale: {SCALE}\nmodel: {{name: {TINY}}}\n")
    with pytest.raises(CheckpointError, match=rf"trained with model 'bicubic'.*builds model '{TINY}'"):
        run("--checkpoint", str(tmp_path / "bic.pt"), "--config", str(cfg), *base)
    cfg.write_text(f"scale: {SCALE}\nmodel: {{name: {TINY}, tail_bias: false}}\n")
    with pytest.raises(CheckpointError, match=r"unexpected keys \['tail.bias'\]"):
        run("--checkpoint", str(tmp_path / "tiny.pt"), "--config", str(cfg), *base)
    with pytest.raises(CheckpointError, match="nowhere.pt"):
        run("--checkpoint", str(tmp_path / "nowhere.pt"), *base)
    Image.new("RGB", (10, 12)).save(tmp_path / "lr" / "odd.png")
    with pytest.raises(DataError, match=r"odd.png.*10x12.*expected 12x12 .* or 48x48"):
        run("--checkpoint", str(tmp_path / "bic.pt"), *base)


def test_shell_wrapper(tmp_path):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    faces(tmp_path / "hr", 2, HR)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "test.sh"),
            str(tmp_path / "bic.pt"),
            str(tmp_path / "hr"),
            str(tmp_path / "hr"),
            str(out),
            "--degrade",
            "--device",
            "cpu",
            "--no_progress",
        ],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PSNR" in proc.stderr and "convention: fsr" in proc.stderr
    assert json.loads((out / "summary.json").read_text())["count"] == 2


def test_lpips_column_with_random_trunk(tmp_path, monkeypatch):
    import metrics.lpips as lp

    torch.manual_seed(0)
    model = lp.build_lpips("alex", random_backbone=True)
    monkeypatch.setattr(lp, "build_lpips", lambda *a, **k: model)
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    hr = faces(tmp_path / "hr", 2, HR, seed=2)
    out = tmp_path / "o"
    summary = run(
        "--checkpoint", str(tmp_path / "bic.pt"), "--lr_dir", str(tmp_path / "hr"), "--degrade", "--lpips",
        "--out_dir", str(out),
    )  # fmt: skip
    rows = {r["name"]: float(r["lpips"]) for r in csv.DictReader(open(out / "results.csv"))}
    for stem, gt in hr.items():
        assert rows[stem] == pytest.approx(lp.calculate_lpips(read_png(out / f"{stem}.png"), gt, model=model), rel=1e-5)
    assert summary["lpips"] == pytest.approx(np.mean(list(rows.values())), rel=1e-9)
    assert "alex" in summary["lpips_convention"]
