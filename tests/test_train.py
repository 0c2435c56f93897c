"""train.py: exact resume, crash-safe saving, SIGTERM, 2-process DDP, NaN stop, overrides, schedules."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import train
import utils.checkpoint
from model.registry import MODEL_REGISTRY, register_model
from utils.checkpoint import load_checkpoint
from utils.ema import ModelEMA
from utils.scheduler import lr_factor

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
RUNNER = f"""
import sys
sys.path[:0] = [{str(REPO)!r}, {str(TESTS)!r}]
import test_train  # registers tiny_test_net
import train
sys.exit(train.main())
"""


class TinyNet(nn.Module):
    """Conv - BN - ReLU - Dropout - conv with a global residual: buffers, RNG use and real gradients.
    ``plain``: no BN and no dropout (a per-sample function); ``sigterm_at``: SIGTERM to this process
    in that training forward. ``body`` is its block for train.grad_checkpoint=blocks."""

    checkpoint_blocks = (nn.Sequential,)

    def __init__(self, width: int = 6, nan_after: int = 0, plain: bool = False, sigterm_at: int = 0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.Identity() if plain else nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Identity() if plain else nn.Dropout2d(0.2),
            nn.Conv2d(width, 3, 3, padding=1),
        )
        self.nan_after, self.sigterm_at = nan_after, sigterm_at
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.body(x)
        if self.training:
            self.calls += 1
            if self.nan_after and self.calls > self.nan_after:
                out = out * float("nan")
            if self.calls == self.sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
        return out


if "tiny_test_net" not in MODEL_REGISTRY:
    register_model("tiny_test_net")(TinyNet)


def write_config(root: Path, name: str = "run", **sections: dict) -> Path:
    cfg = {
        "name": name,
        "seed": 3,
        "scale": 8,
        "model": {"name": "tiny_test_net"},
        "data": {
            "train": {"type": "sample", "hr_size": 16, "num_workers": 0},
            "val": {"type": "sample", "hr_size": 16},
        },
        "train": {
            "batch_size": 3,
            "iterations": 10,
            "optimizer": {"type": "adamw", "lr": 2e-3, "weight_decay": 0.01},
            "scheduler": {"type": "cosine", "unit": "iter", "warmup": 2, "min_lr": 1e-4},
            "ema": 0.9,
            "grad_clip": 0.5,
        },
        "logging": {
            "print_every": 1,
            "val_every": 3,
            "save_every": 4,
            "sample_every": 5,
            "tensorboard": False,
            "progress_bar": False,
        },
        "paths": {"experiments_root": str(root)},
    }
    for key, value in sections.items():
        cfg[key].update(value)
    path = root / f"{name}.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def tensors_equal(a: object, b: object, where: str = "") -> None:
    """Recursive bit-exact comparison of nested checkpoint contents."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            tensors_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            tensors_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def run_log(root: Path, name: str = "run") -> str:
    return (root / name / "train.log").read_text()


def test_resume_mid_epoch_is_bit_identical(tmp_path: Path) -> None:
    # 16 sample images / batch 3 -> 5 iterations per epoch; stopping at 7 is mid-epoch 1.
    once = write_config(tmp_path / "once", logging={"tensorboard": True})
    assert train.main(["--config", str(once)]) == 0
    split = write_config(tmp_path / "split")
    assert train.main(["--config", str(split), "--stop-at", "7"]) == 0
    half = load_checkpoint(tmp_path / "split" / "run" / "checkpoints" / "latest.pt")
    assert (half["iteration"], half["epoch"], half["rng"]["loader"]["batches_done"]) == (7, 1, 2)
    assert train.main(["--config", str(split), "--resume"]) == 0

    a = load_checkpoint(tmp_path / "once" / "run" / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "split" / "run" / "checkpoints" / "latest.pt")
    assert a["iteration"] == b["iteration"] == 10
    for key in ("model", "ema", "optimizer", "scheduler", "best_psnr", "epoch"):
        tensors_equal(a[key], b[key], key)
    assert not torch.equal(a["model"]["body.0.weight"], half["model"]["body.0.weight"])  # it did train
    assert not torch.equal(a["model"]["body.0.weight"], a["ema"]["body.0.weight"])  # EMA is separate

    run = tmp_path / "once" / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "iter_4.pt", "iter_8.pt", "latest.pt"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["ema"] == 0.9
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["iter_0000005.png", "iter_0000010.png"]
    log = run_log(tmp_path / "once")
    assert "effective batch size 3" in log and "world size 1" in log
    assert log.count("validation iter") == 4  # 3, 6, 9 and the final 10
    assert "resumed from" in run_log(tmp_path / "split") and "stopped by --stop-at 7" in run_log(tmp_path / "split")
    assert train.main(["--config", str(split), "--resume"]) == 0  # a finished run resumes to nothing
    assert "already trained 10 of 10 iterations" in run_log(tmp_path / "split")
    tensors_equal(b["model"], load_checkpoint(tmp_path / "split" / "run" / "checkpoints" / "latest.pt")["model"])


def test_crash_while_saving_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = torch.save
    calls = []

    def dying_save(obj: object, f: object) -> None:
        calls.append(1)
        if len(calls) == 2:  # second checkpoint write: half the bytes, then the process "dies"
            real_save(obj, f)
            f.seek(0)
            f.truncate(100)
            raise KeyboardInterrupt("killed while saving")
        real_save(obj, f)

    monkeypatch.setattr(utils.checkpoint.torch, "save", dying_save)
    cfg = write_config(tmp_path, train={"ema": 0.0}, logging={"save_every": 2, "val_every": 100})
    with pytest.raises(KeyboardInterrupt):
        train.main(["--config", str(cfg), "--set", "logging.keep_iter_checkpoints=false"])
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert load_checkpoint(ckpt_dir / "latest.pt")["iteration"] == 2
    assert [p.name for p in ckpt_dir.iterdir()] == ["latest.pt"]  # the temp file is gone


def test_non_finite_loss_stops_with_iteration_and_last_checkpoint(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, logging={"save_every": 2, "val_every": 100})
    assert train.main(["--config", str(cfg), "--set", "model.nan_after=5"]) == 1
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    log = run_log(tmp_path)
    assert (
        f"non-finite loss (nan) at iteration 6 (epoch 1); training stopped, last good checkpoint: {latest} (iteration 4)"
        in log
    )
    state = load_checkpoint(latest)
    assert state["iteration"] == 4 and all(torch.isfinite(t).all() for t in state["model"].values())


def test_overrides_reach_optimizer_and_weight_decay_groups(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, logging={"val_every": 100})
    overrides = ["train.optimizer.lr=0.0123", "train.optimizer.weight_decay=0.05", "train.scheduler.type=constant"]
    assert train.main(["--config", str(cfg), "--stop-at", "1", "--set", *overrides]) == 0
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    decay, no_decay = state["optimizer"]["param_groups"]
    assert decay["lr"] == no_decay["lr"] == 0.0123
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    assert (len(decay["params"]), len(no_decay["params"])) == (2, 4)  # conv weights vs biases and BN
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["optimizer"]["lr"] == 0.0123


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_steps(tmp_path: Path, amp: str) -> None:
    cfg = write_config(tmp_path, logging={"val_every": 2})
    assert train.main(["--config", str(cfg), "--stop-at", "2", "--set", f"train.amp={amp}"]) == 0
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert bool(state["scaler"]) == (amp == "fp16")  # GradScaler only for fp16
    assert "validation iter 2" in run_log(tmp_path)


def test_epochs_mode_and_resume_auto_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path, logging={"val_every": 100, "save_every": 100})
    sets = [
        "train.iterations=null",
        "train.epochs=2",
        "train.scheduler={type: multistep, unit: epoch, milestones: [1]}",
    ]
    assert train.main(["--config", str(cfg), "--resume", "auto", "--set", *sets]) == 0
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert (state["iteration"], state["epoch"]) == (10, 2)  # 2 epochs x 5 iterations
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)  # 2e-3 halved after epoch 1
    assert "no checkpoint in" in run_log(tmp_path)
    both = ["train.iterations=4", "train.epochs=2"]
    assert train.main(["--config", str(cfg), "--set", *both]) == 1
    assert "set exactly one of train.iterations and train.epochs" in capsys.readouterr().err


def test_param_groups_exempt_ssm_and_flagged_parameters() -> None:
    net = nn.Module()
    net.proj = nn.Linear(4, 4)
    net.A_logs = nn.Parameter(torch.zeros(4, 2))
    net.Ds = nn.Parameter(torch.ones(4))
    net.gate = nn.Parameter(torch.zeros(2, 2))
    net.gate._no_weight_decay = True
    decay, no_decay = train.param_groups(net, 0.1)
    assert [p is net.proj.weight for p in decay["params"]] == [True]
    assert {id(p) for p in no_decay["params"]} == {id(net.proj.bias), id(net.A_logs), id(net.Ds), id(net.gate)}


def test_checkpoint_of_other_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path, logging={"val_every": 100})
    other = tmp_path / "other.pt"
    utils.checkpoint.save_checkpoint({"model_name": "bicubic", "model": {}, "config": {}, "iteration": 3}, other)
    assert train.main(["--config", str(cfg), "--resume", str(other)]) == 1
    assert "trained with model 'bicubic', but the config builds model 'tiny_test_net'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_bad_loss_entry_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path, logging={"val_every": 100})
    assert train.main(["--config", str(cfg), "--set", "train.losses=[{type: nope, weight: 1.0}]"]) == 1
    err = capsys.readouterr().err
    assert "train.losses[0]" in err and "nope" in err


def test_lr_schedules() -> None:
    multi = {"type": "multistep", "warmup": 2, "milestones": [4, 6], "gamma": 0.5, "min_lr": 0.0}
    assert [lr_factor(t, multi, 10, 1.0) for t in range(8)] == [0.5, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    cos = {"type": "cosine", "warmup": 0, "milestones": [], "gamma": 0.5, "min_lr": 0.1}
    assert lr_factor(0, cos, 10, 1.0) == 1.0
    assert lr_factor(5, cos, 10, 1.0) == pytest.approx(0.55)
    assert lr_factor(10, cos, 10, 1.0) == pytest.approx(0.1)
    net = nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = train.build_scheduler(opt, dict(multi, unit="epoch"), iters_per_epoch=3, total_iters=30)
    lrs = []
    for _ in range(15):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == [0.5] * 3 + [1.0] * 9 + [0.5] * 3  # epochs 0, 1-3, 4


def test_ema_update_closed_form() -> None:
    net = nn.Linear(3, 2)
    ema = ModelEMA(net, 0.75)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(4.0)
    ema.update()
    torch.testing.assert_close(ema.module.weight, 0.75 * start + 0.25 * (start + 4.0))


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_sigterm_saves_latest_and_exits_cleanly(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, train={"iterations": 100000}, logging={"save_every": 100000, "val_every": 100000})
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    proc = subprocess.Popen(
        [sys.executable, str(runner), "--config", str(cfg)], cwd=tmp_path, env=_env(), stderr=subprocess.PIPE, text=True
    )
    log = tmp_path / "run" / "train.log"
    deadline = time.monotonic() + 120
    while not (log.is_file() and "iter 2/" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert state["iteration"] >= 2
    assert f"stopped by SIGTERM at iteration {state['iteration']}; continue with --resume auto" in log.read_text()


def test_two_process_ddp_ranks_agree(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, train={"iterations": 4, "batch_size": 2}, logging={"val_every": 3, "save_every": 4})
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, str(runner), "--config", str(cfg)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = run_log(tmp_path)
    assert "world size 2, batch size 2 per process, effective batch size 4" in log
    assert "4 iterations per epoch" in log  # 16 images / 2 ranks / batch 2
    digest = log.split("parameters identical on all 2 ranks: sha256 ")[1].split()[0]
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    names = [n for n, _ in TinyNet().named_parameters()]
    both = {**{n: state["model"][n] for n in names}, **{f"ema.{n}": state["ema"][n] for n in names}}
    assert train.weights_digest(both) == digest
    assert len(state["rng"]["ranks"]) == 2
    assert not torch.equal(state["rng"]["ranks"][0]["torch"], state["rng"]["ranks"][1]["torch"])  # seed + rank
    assert math.isfinite(state["best_psnr"])


DYING_RUNNER = f"""
import os, sys
sys.path[:0] = [{str(REPO)!r}, {str(TESTS)!r}]
import test_train
import train
from model.registry import register_model

class DiesOnRank1(test_train.TinyNet):
    def forward(self, x):
        if self.training and os.environ["RANK"] == "1" and self.calls == 5:
            os._exit(3)  # like kill -9 or the OOM killer: no Python clean-up, the socket just closes
        return super().forward(x)

register_model("dies_on_rank1")(DiesOnRank1)
sys.exit(train.main())
"""


def test_ddp_peer_death_is_one_line_naming_the_last_checkpoint(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        model={"name": "dies_on_rank1"},
        train={"iterations": 50, "batch_size": 2},
        logging={"val_every": 100, "save_every": 2, "sample_every": 100},
    )
    runner = tmp_path / "runner.py"
    runner.write_text(DYING_RUNNER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, str(runner), "--config", str(cfg)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode != 0
    rank0 = [line for line in done.stderr.splitlines() if line.startswith("[rank0]")]
    assert not rank0, "\n".join(rank0[-20:])  # no raw traceback from the surviving rank
    line = next(ln for ln in done.stderr.splitlines() if " ERROR rank 0: another process died" in ln)
    assert "lost its connection at iteration 5" in line and "continue with --resume auto" in line
    assert f"last good checkpoint: {tmp_path / 'run' / 'checkpoints' / 'latest.pt'} (iteration 4)" in line
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["iteration"] == 4
