"""Issue 19's bad-input battery: each case that failed (run names, decompression bombs, duplicate stems,
non-finite and huge config values, full disk, malicious checkpoints, run.lock, EXIF, conversions noted,
ninja switches, the mamba_ssm probe) is refused with one line or handled, and nothing is lost."""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from test_inference import HR, faces, make_checkpoint, run
from test_train import write_config

import train
from data import build_dataset
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.config import ConfigError, load_config
from utils.image_io import DataError, decode_rgb, open_header
from utils.run_folder import LOCK_NAME

REPO = Path(__file__).resolve().parents[1]


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A valid-looking PNG whose header declares side x side pixels (a few bytes on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 9)) + chunk(b"IEND", b"")
    )
    return path


# ----------------------------------------------------------------- 1. run names
@pytest.mark.parametrize("raw, name", [(n, n) for n in ("../escaped", "/abs/path", ".", "..", "a/b")] + [("''", "")])
def test_run_name_is_one_folder_under_the_root(tmp_path, monkeypatch, capsys, raw, name):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    cfg = write_config(root, train={"iterations": 1})
    (root / "other").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert train.main(["--config", str(cfg), "--set", f"name={raw}", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "config key 'name' must be one folder name under paths.experiments_root" in err and repr(name) in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, nothing moved aside


# ----------------------------------------------------------------- 2. decompression bombs
def test_decompression_bomb_is_one_line_or_skipped(tmp_path):
    folder = tmp_path / "hr"
    faces(folder, 3, 32)
    bomb_png(folder / "bomb.png")
    section = {"type": "hr_folder", "hr_dir": str(folder), "hr_size": 32, "num_workers": 0}
    with pytest.raises(DataError) as info:
        build_dataset(section, 4, train=True)
    assert "bomb.png" in str(info.value) and "decompression-bomb limit" in str(info.value)
    assert "900000000 pixels" in str(info.value) and "\n" not in str(info.value)
    assert len(build_dataset({**section, "skip_bad": True}, 4, train=True)) == 3  # skipped and counted
    with pytest.raises(ValueError, match=r"bomb.png' was not decoded: its header declares 900000000 pixels"):
        decode_rgb(folder / "bomb.png")


def test_decompression_bomb_through_test_py(tmp_path):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    faces(tmp_path / "hr", 1, HR)
    bomb_png(tmp_path / "hr" / "bomb.png")
    with pytest.raises(DataError, match=r"^image file .*bomb.png' was not decoded: .*limit of \d+$"):
        run(
            "--checkpoint",
            str(tmp_path / "bic.pt"),
            "--lr_dir",
            str(tmp_path / "hr"),
            "--degrade",
            "--out_dir",
            str(tmp_path / "o"),
        )


# ----------------------------------------------------------------- 3. two inputs with one stem
@pytest.mark.parametrize("degrade", [False, True])
def test_two_inputs_with_one_stem_are_refused_before_writing(tmp_path, degrade):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    side = HR if degrade else HR // 4
    faces(tmp_path / "in", 2, side)
    Image.new("RGB", (side, side), (9, 9, 9)).save(tmp_path / "in" / "face_0.jpg")
    args = [
        "--checkpoint",
        str(tmp_path / "bic.pt"),
        "--lr_dir",
        str(tmp_path / "in"),
        "--out_dir",
        str(tmp_path / "o"),
    ]
    with pytest.raises(DataError, match=r"two files with the stem 'face_0': face_0.jpg and face_0.png.*rename"):
        run(*args, *(["--degrade"] if degrade else []))
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------- 4, 5. non-finite and huge values
@pytest.mark.parametrize(
    "override, key",
    [
        ("train.optimizer.lr=.nan", "train.optimizer.lr"),
        ("train.optimizer.lr=.inf", "train.optimizer.lr"),
        ("train.ema=.nan", "train.ema"),
        ("train.grad_clip=.nan", "train.grad_clip"),
        ("train.scheduler.gamma=-.inf", "train.scheduler.gamma"),
        ("train.losses=[{type: l1, weight: .nan}]", "train.losses[0].weight"),
        ("train.optimizer.betas=[0.9, .nan]", "train.optimizer.betas[1]"),
        ("model.scale=.nan", "model.scale"),
    ],
)
def test_non_finite_numbers_are_config_errors_naming_the_key(override, key):
    with pytest.raises(
        ConfigError, match=rf"^config key '{key}' must be a finite number, got (nan|inf|-inf)$".replace("[", r"\[")
    ):
        load_config(None, [override])


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.train.hr_size=1000000000", "'data.train.hr_size' must be <= 8192"),
        ("data.val.hr_size=100000", "'data.val.hr_size' must be <= 8192"),
        ("train.batch_size=1e9", "'train.batch_size' must be <= 65536"),
        ("train.iterations=1e12", "'train.iterations' must be <= 1000000000"),
        ("data.train.num_workers=100000", "'data.train.num_workers' must be <= 256"),
    ],
)
def test_sizes_and_counts_are_bounded(tmp_path, capsys, override, message):
    cfg = write_config(tmp_path)
    assert train.main(["--config", str(cfg), "--set", override]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_base_naming_a_folder(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "run.yaml").write_text("base: shared\n")
    with pytest.raises(ConfigError, match=r"shared' is a folder; expected a YAML file"):
        load_config(tmp_path / "run.yaml")


# ----------------------------------------------------------------- 7. full disk in test.py
def test_full_disk_names_the_file_and_prints_scores_so_far(tmp_path, monkeypatch, caplog):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    faces(tmp_path / "hr", 5, HR)
    real_save, calls = Image.Image.save, []

    def save(img, fp, *a, **kw):
        calls.append(fp)
        if len(calls) == 3:
            Path(fp).write_bytes(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(img, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", save)
    caplog.set_level("INFO", logger="test")
    out = tmp_path / "o"
    with pytest.raises(OSError) as info:
        run(
            "--checkpoint",
            str(tmp_path / "bic.pt"),
            "--lr_dir",
            str(tmp_path / "hr"),
            "--degrade",
            "--out_dir",
            str(out),
        )
    msg = str(info.value)
    assert msg.startswith(f"disk full writing {out / 'images' / 'face_2.png'}") and "stopped after 2 of 5" in msg
    assert "scores are printed above" in msg
    assert "scores of the 2 image(s) written before the failure" in caplog.text and "images: 2  PSNR:" in caplog.text
    assert sorted(p.name for p in (out / "images").iterdir()) == ["face_0.png", "face_1.png"]  # no partial file


# ----------------------------------------------------------------- 8. malicious checkpoints
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_without_weights_only_advice(tmp_path, capsys):
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model_name": "bicubic", "model": _Evil(marker), "config": {}, "iteration": 0}, evil)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(evil)
    msg = str(info.value)
    assert "holds Python objects other than tensors" in msg and "was not loaded" in msg and "posix.system" in msg
    assert "weights_only" not in msg and "\n" not in msg and not marker.exists()
    from tools import convert_released

    with pytest.raises(ValueError) as info:
        convert_released.main(["--model", "rhmc", "--src", str(evil), "--out", str(tmp_path / "o.pt")])
    assert "was not loaded" in str(info.value) and "weights_only" not in str(info.value) and "\n" not in str(info.value)
    cfg = write_config(tmp_path, train={"iterations": 1})
    assert train.main(["--config", str(cfg), "--resume", str(evil)]) == 1
    err = capsys.readouterr().err
    assert "was not loaded" in err and "weights_only" not in err and not marker.exists()


# ----------------------------------------------------------------- 9. test.py inside a live run
def test_out_dir_inside_a_locked_run_folder_is_refused(tmp_path):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    faces(tmp_path / "hr", 1, HR)
    run_dir = tmp_path / "experiments" / "live"
    run_dir.mkdir(parents=True)
    args = ["--checkpoint", str(tmp_path / "bic.pt"), "--lr_dir", str(tmp_path / "hr"), "--degrade"]
    lock = {"pid": os.getpid(), "host": os.uname().nodename, "started": "now"}
    (run_dir / LOCK_NAME).write_text(json.dumps(lock))
    with pytest.raises(OSError, match=r"inside the run folder .*live', in use by a running training \(pid"):
        run(*args, "--out_dir", str(run_dir / "eval"))
    assert not (run_dir / "eval").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({**lock, "pid": int(dead.stdout)}))  # a finished run's stale lock
    assert run(*args, "--out_dir", str(run_dir / "eval"))["count"] == 1


# ----------------------------------------------------------------- weak: EXIF, conversions noted
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif, quality=100)
    with Image.open(path) as stored:
        oracle = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    assert np.array_equal(decode_rgb(path), oracle)
    assert open_header(path) == (oracle.shape[1], oracle.shape[0])


def test_metric_scripts_note_each_conversion_once(tmp_path, capsys):
    from metrics import psnr_ssim
    from utils import image_io

    image_io._told.clear()
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        for i in range(2):
            Image.new("RGBA", (16, 16), (10 * i, 20, 30, 128)).save(tmp_path / folder / f"{i}.png")
    psnr_ssim.main(["--pred_dir", str(tmp_path / "pred"), "--gt_dir", str(tmp_path / "gt")])
    err = capsys.readouterr().err
    assert err.count("note: converting RGBA (alpha composited on white) images to 8-bit RGB") == 1


# ----------------------------------------------------------------- 11. one build per source, whatever ninja
def test_cpu_kernel_is_not_rebuilt_when_another_ninja_is_first_on_path(tmp_path):
    from model.ssm.cpu_kernel import kernel_available

    if not kernel_available():  # builds it here once when needed
        pytest.skip("the compiled CPU scan does not build on this machine")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ninja").write_text(f"#!/bin/sh\ntouch {tmp_path / 'ninja_ran'}\nexit 1\n")
    (fake / "ninja").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    code = "from model.ssm.cpu_kernel import kernel_available; print(kernel_available())"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "True", done.stderr[-2000:]
    assert not (tmp_path / "ninja_ran").exists()


# ----------------------------------------------------------------- 13. small ones
def test_lpips_message_names_test_py_flag(tmp_path):
    from metrics.lpips import build_lpips

    with pytest.raises(FileNotFoundError, match=r"pass its path with --lpips_weights\.$"):
        build_lpips("alex", tmp_path / "none.pth", flag="--lpips_weights")


def test_convert_released_help_describes_src_and_out(capsys):
    from tools import convert_released

    with pytest.raises(SystemExit):
        convert_released.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--src SRC released .pth" in text and "--out OUT our checkpoint for test.py" in text


# ----------------------------------------------------------------- 15. mamba_ssm without its kernel
def test_mamba_ssm_without_selective_scan_cuda_is_not_picked(monkeypatch):
    import types

    import model.ssm as ssm

    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = lambda *a, **k: None
    for name, module in {
        "mamba_ssm": types.ModuleType("mamba_ssm"),
        "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
        "mamba_ssm.ops.selective_scan_interface": interface,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", None)  # the package imports, its kernel does not
    assert ssm._mamba_ssm_fn() is None
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
    assert ssm._mamba_ssm_fn() is not None


# ----------------------------------------------------------------- 19. test.py --fit resize
def test_fit_resize_takes_any_input_size(tmp_path, caplog):
    make_checkpoint(tmp_path / "bic.pt", {"name": "bicubic"})
    faces(tmp_path / "photo", 2, 37)
    caplog.set_level("INFO", logger="test")
    args = [
        "--checkpoint",
        str(tmp_path / "bic.pt"),
        "--lr_dir",
        str(tmp_path / "photo"),
        "--out_dir",
        str(tmp_path / "o"),
    ]
    with pytest.raises(DataError, match=r"is 37x37.*--fit resize resizes any input"):
        run(*args)
    summary = run(*args, "--fit", "resize")
    assert summary["inputs"] == ["resized"] and summary["count"] == 2
    assert caplog.text.count("--fit resize: face_0.png is 37x37, resized to 12x12") == 1
    out = np.asarray(Image.open(tmp_path / "o" / "images" / "face_0.png"))
    assert out.shape == (HR, HR, 3)
    small = Image.open(tmp_path / "photo" / "face_0.png").convert("RGB").resize((12, 12), Image.Resampling.BICUBIC)
    assert np.array_equal(out, np.asarray(small.resize((HR, HR), Image.Resampling.BICUBIC)))  # bicubic = identity net


# ----------------------------------------------------------------- 10. threads under load
@pytest.mark.parametrize("script", ["train.py", "test.py"])
def test_omp_wait_policy_is_set_before_torch_loads(script):
    """OpenMP reads OMP_WAIT_POLICY once, when torch loads it: the default must be set before any import of torch."""
    import ast

    body = ast.parse((REPO / script).read_text()).body
    names = [ast.unparse(node) for node in body]
    setting = next(i for i, text in enumerate(names) if "OMP_WAIT_POLICY" in text)
    assert "setdefault('OMP_WAIT_POLICY', 'PASSIVE')" in names[setting]
    first_import = min(
        i
        for i, node in enumerate(body)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and "os" not in names[i] and "__future__" not in names[i]
    )
    assert setting < first_import


# ----------------------------------------------------------------- 17. the authors' commands
def _pairs(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gts", tmp_path / "preds"
    faces(gt, 2, 16, seed=1)
    faces(pred, 2, 16, seed=2)
    return pred, gt


def _script(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def test_rhmc_metric_commands_run_by_path_as_written(tmp_path):
    pred, gt = _pairs(tmp_path)
    from metrics.psnr_ssim import main as psnr_main

    expected = psnr_main(["--pred_dir", str(pred), "--gt_dir", str(gt), "--csv", str(tmp_path / "a.csv")])
    for script in ("metrics/calculate_psnr_ssim.py", "metrics/psnr_ssim.py"):
        done = _script(script, "--pred_dir", str(pred), "--gt_dir", str(gt), "--csv", str(tmp_path / "b.csv"))
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.splitlines()[-2])["psnr"] == expected["psnr"]
    done = _script("metrics/calculate_lpips.py", "--pred_dir", str(pred), "--gt_dir", str(gt), "--weights", "none.pth")
    assert done.returncode == 1 and done.stderr.startswith("error: LPIPS-alex needs the torchvision ImageNet backbone")
    assert len(done.stderr.strip().splitlines()) == 1  # imported fine (not our metrics/lpips.py shadowing the package)


def test_hybrimamba_positional_order_and_rhmc_flags(tmp_path):
    from metrics.psnr_ssim import main as psnr_main

    pred, gt = _pairs(tmp_path)
    csv = ["--csv", str(tmp_path / "s.csv")]
    named = psnr_main(["--pred_dir", str(pred), "--gt_dir", str(gt), *csv])
    positional = psnr_main([str(gt), str(pred), *csv])  # HybriMamba: python psnr_ssim.py GT_DIR SR_DIR
    rhmc_own = psnr_main(["-restored_folder", str(pred), "-gt_folder", str(gt), *csv])
    assert named == positional == rhmc_own
    with pytest.raises(SystemExit):
        psnr_main([str(gt)])


@pytest.mark.parametrize(
    "script, flag, ours",
    [
        ("train.py", "--gpus 2", "bash train.sh CONFIG N"),
        ("train.py", "--lr 0.0004", "--set train.optimizer.lr=VALUE"),
        ("train.py", "--continue_train", "--resume auto"),
        ("train.py", "--total_epochs 100", "--set train.epochs=N"),
        ("train.py", "--batch_size 32", "--set train.batch_size=N"),
        ("train.py", "--dataroot /data/CelebA", "--set data.train.hr_dir=DIR"),
        ("test.py", "--pretrain_model_path ./ckpt/x.pt", "--checkpoint PATH"),
        ("test.py", "--save_as_dir result/helen", "--out-dir DIR"),
        ("test.py", "--name Mamba-SRx8", "--out-dir DIR"),
    ],
)
def test_authors_flags_get_one_line_naming_ours(capsys, script, flag, ours):
    from utils.authors import refuse_authors_flags

    with pytest.raises(SystemExit) as info:
        refuse_authors_flags(["--config", "c.yaml", *flag.split()], script)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith(f"{script}: {flag.split()[0]} is a flag of the authors'") and ours in err[0]
    )


def test_hybrimamba_train_command_through_train_py(tmp_path):
    argv = "--gpus 3 --name Mamba-SRx8 --model Mamba --lr 0.0004 --batch_size 32 --total_epochs 100".split()
    done = _script(str(REPO / "train.py"), *argv, cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 6 and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())


def test_rhmc_config_path_and_released_state_dict_point_to_ours(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"model/RHMC/config.yaml' does not exist; .*configs/rhmc_x8_celeba.yaml"):
        load_config("model/RHMC/config.yaml")
    torch.save({"module.shallow_conv.weight": torch.zeros(2, 3, 3, 3)}, tmp_path / "released.pth")
    with pytest.raises(
        CheckpointError, match=r"lacks keys .*: a bare state dict \(1 tensors\).*tools.convert_released"
    ):
        load_checkpoint(tmp_path / "released.pth")


def test_a_batch_that_cannot_fit_in_memory_is_a_config_error(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert train.main(["--config", str(cfg), "--set", "data.train.hr_size=8192", "train.batch_size=4096"]) == 1
    err = capsys.readouterr().err
    assert "train.batch_size=4096 at data.train.hr_size=8192: one batch's LR and HR tensors take 6144.0 GiB" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("script, lines", [("train.sh", 4), ("test.sh", 2)])
def test_hybrimamba_shell_commands_as_written(tmp_path, script, lines):
    argv = ["--dataroot", "/data/CelebA", "--name", "exp"] + (
        ["--batch_size", "32", "--gpus", "2"] if script == "train.sh" else []
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / script), *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == lines, done.stderr
    assert all("is a flag of the authors' HybriMamba scripts; here use" in line for line in err)
    assert not any(tmp_path.iterdir())
