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

from metrics.psnr_ssim import calculate_psnr, calculate_ssim
from metrics.tensor import tensor_to_uint8
from model.registry import MODEL_REGISTRY, register_model
from model.ss2d import SS2D
from utils.checkpoint import CheckpointError, save_checkpoint
from utils.config import resolve_config
from utils.image_io import DataError

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


def make_checkpoint(
    path: Path, model_cfg: dict, ema: bool = False, name: str | None = None, data: dict | None = None
) -> dict:
    from model import build_model

    cfg = resolve_config({"scale": SCALE, "model": model_cfg, "data": {"val": {"hr_size": HR}, **(data or {})}})
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
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{s}.png" for s in sorted(hr)]  # PNGs only
    assert sorted(p.name for p in out.iterdir()) == ["images", "results.csv", "summary.json"]
    rows = {r["name"]: r for r in csv.DictReader(open(out / "results.csv"))}
    psnrs = []
    for stem, gt in hr.items():
        sr = read_png(out / "images" / f"{stem}.png")
        lr = Image.open(lr_dir / f"{stem}.bmp")
        assert np.array_equal(sr, np.asarray(lr.resize((HR, HR), Image.Resampling.BICUBIC)))  # bicubic = identity
        psnrs.append(calculate_psnr(sr, gt))
        assert float(rows[stem]["psnr"]) == pytest.approx(psnrs[-1], rel=1e-9)
        assert float(rows[stem]["ssim"]) == pytest.approx(calculate_ssim(sr, gt), rel=1e-9)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["psnr"] == pytest.approx(np.mean(psnrs)) == pytest.approx(summary["psnr"])
    assert saved["count"] == 3 and saved["inputs"] == ["small"] and saved["convention"].startswith("fsr")
    assert saved["model_name"] == "bicubic" and saved["ms_per_image"] > 0
    assert saved["quantize"] == "truncate" and "truncate" in saved["quantize_convention"]


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
                expected = tensor_to_uint8(net(x[None].float() / 255)[0], "truncate")
            diff = np.abs(read_png(out / "images" / f"{stem}.png").astype(int) - expected)
            assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # batched vs single forward: rounding ties only
        assert "vif" in summary and summary["convention"].startswith("basicsr")
    assert not np.array_equal(
        read_png(tmp_path / "o_ema/images/face_0.png"), read_png(tmp_path / "o_raw/images/face_0.png")
    )


def test_upsampled_lr_without_hr(tmp_path):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    imgs = faces(tmp_path / "lr", 2, HR)
    summary = run(
        "--checkpoint", str(tmp_path / "bic.pt"), "--lr_dir", str(tmp_path / "lr"), "--out_dir", str(tmp_path / "o")
    )
    assert summary["inputs"] == ["upsampled"] and "psnr" not in summary
    assert not (tmp_path / "o" / "results.csv").exists()
    assert np.array_equal(read_png(tmp_path / "o" / "images" / "face_1.png"), imgs["face_1"])


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
    with pytest.raises(
        CheckpointError,
        match=r"1 checkpoint tensor\(s\) the model does not have, e.g. tail.bias.*model.tail_bias: None -> False",
    ):
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
        sr = read_png(out / "images" / f"{stem}.png")
        assert rows[stem] == pytest.approx(lp.calculate_lpips(sr, gt, model=model), rel=1e-5)
    assert summary["lpips"] == pytest.approx(np.mean(list(rows.values())), rel=1e-9)
    assert "alex" in summary["lpips_convention"]


class PlusLevels(nn.Module):
    """Adds 0.6 / 255 to every value: saved levels are k (truncate) or k + 1 (round)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.6 / 255 + 0.0 * self.dummy


def test_quantize_truncate_by_default_round_on_request(tmp_path):
    register_model("plus_levels_test")(PlusLevels)
    try:
        make_checkpoint(tmp_path / "p.pt", {"name": "plus_levels_test"})
        imgs = faces(tmp_path / "lr", 1, HR)
        base = ["--checkpoint", str(tmp_path / "p.pt"), "--lr_dir", str(tmp_path / "lr")]
        trunc = run(*base, "--out_dir", str(tmp_path / "t"))
        rounded = run(*base, "--out_dir", str(tmp_path / "r"), "--quantize", "round")
    finally:
        MODEL_REGISTRY.pop("plus_levels_test")
    level = imgs["face_0"].astype(int)
    assert np.array_equal(read_png(tmp_path / "t" / "images" / "face_0.png"), level)  # k + 0.6 -> k
    assert np.array_equal(read_png(tmp_path / "r" / "images" / "face_0.png"), np.minimum(level + 1, 255))
    assert trunc["quantize"] == "truncate" and rounded["quantize"] == "round"


def test_network_value_range_single_place(tmp_path):
    # the identity (bicubic on upsampled input) in a [-1, 1] network, saved as the papers' tensor_to_img does
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"}, data={"value_range": [-1, 1]})
    imgs = faces(tmp_path / "lr", 1, HR)
    for quantize in ("truncate", "round"):
        run("--checkpoint", str(tmp_path / "bic.pt"), "--lr_dir", str(tmp_path / "lr"), "--out_dir",
            str(tmp_path / quantize), "--quantize", quantize)  # fmt: skip
    y = imgs["face_0"].astype(np.float32) / np.float32(255) * np.float32(2) - np.float32(1)  # network input = output
    papers = np.clip((y + 1.0) / 2.0 * 255.0, 0, 255).astype(np.uint8)  # (y + 1) / 2 * 255, clip, astype
    saved = read_png(tmp_path / "truncate" / "images" / "face_0.png")
    assert np.array_equal(saved, papers)
    assert (saved != imgs["face_0"]).any()  # truncation after the [-1, 1] round trip loses a level on some values
    assert np.array_equal(read_png(tmp_path / "round" / "images" / "face_0.png"), imgs["face_0"])


def test_results_beside_images_and_printed_before_writing(tmp_path, monkeypatch, caplog):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    faces(tmp_path / "hr", 2, HR)
    out = tmp_path / "o"
    (out / "images").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(out / "images" / "old_run.png")
    real_write = inference.write_csv

    def refuse(path, rows):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(inference, "write_csv", refuse)  # a read-only destination, root or not
    argv = ["--checkpoint", str(tmp_path / "bic.pt"), "--lr_dir", str(tmp_path / "hr"), "--degrade", "--vif"]
    with caplog.at_level("INFO", logger="test"), pytest.raises(OSError, match=r"cannot write results.csv.*printed"):
        run(*argv, "--out_dir", str(out))
    assert "PSNR: " in caplog.text and "vif_channel=gray" in caplog.text
    assert "already holds 1 image(s) that this run does not write (e.g. old_run.png)" in caplog.text
    assert sorted(p.name for p in (out / "images").iterdir()) == ["face_0.png", "face_1.png", "old_run.png"]
    monkeypatch.setattr(inference, "write_csv", real_write)
    summary = run(*argv, "--out_dir", str(out), "--vif_channel", "y")
    assert summary["vif_channel"] == "y" and "16 + RGB" in summary["vif_convention"]
    assert json.loads((out / "summary.json").read_text())["images_dir"] == str(out / "images")


def test_unwritable_out_dir_fails_before_inference(tmp_path, monkeypatch):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    faces(tmp_path / "lr", 1, HR)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(inference.tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(inference.Evaluator, "add", lambda *a: pytest.fail("inference ran"))
    with pytest.raises(OSError, match=r"cannot write to the output folder .*o/images.*Permission denied"):
        run(
            "--checkpoint", str(tmp_path / "bic.pt"), "--lr_dir", str(tmp_path / "lr"), "--out_dir", str(tmp_path / "o")
        )


def test_progress_bar_counts_inferred_images(tmp_path, monkeypatch):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    faces(tmp_path / "lr", 5, HR)
    seen, bars = [], []

    class Bar:
        def __init__(self, *args, total=None, **kwargs):
            self.n, self.total = 0, total
            bars.append(self)

        def update(self, k):
            seen.append((self.n, len(list((tmp_path / "o" / "images").glob("*.png")))))
            self.n += k

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(inference, "tqdm", Bar)
    inference.main(["--checkpoint", str(tmp_path / "bic.pt"), "--lr_dir", str(tmp_path / "lr"), "--out_dir",
                    str(tmp_path / "o"), "--device", "cpu", "--batch_size", "2"])  # fmt: skip
    # each update comes after its batch is saved: 2 then 4 then 5 images, never ahead of the files
    assert bars[0].total == 5 and bars[0].n == 5
    assert seen == [(0, 2), (2, 4), (4, 5)]
