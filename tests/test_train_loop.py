"""train.py's loop: no per-step host reads, deferred non-finite check, train.accumulate (same update as the
big batch, DDP all-reduces once per update, exact resume when stopped mid-accumulation), the config keys."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import REPO, TESTS, _env, run_log, tensors_equal, write_config

import train
from bench.host_syncs import per_iteration
from utils.checkpoint import load_checkpoint
from utils.config import ConfigError, load_config

QUIET = {"val_every": 1000, "save_every": 1000, "sample_every": 1000}


def test_plain_iterations_read_nothing_from_the_device(tmp_path: Path, single_thread) -> None:
    losses = [{"type": "l1"}, {"type": "charbonnier", "weight": 0.5}]
    cfg = write_config(tmp_path, train={"iterations": 8, "losses": losses}, logging={**QUIET, "print_every": 4})
    counts, sites = collections.Counter(), collections.Counter()
    with per_iteration(counts, sites):
        assert train.main(["--config", str(cfg)]) == 0
    assert [counts[i] for i in (1, 2, 3, 5, 6, 7)] == [0] * 6, sites
    assert counts[4] == 2  # the non-finite check and the loss window, at the print boundary
    line = next(x for x in run_log(tmp_path).splitlines() if "iter 4/8" in x)
    assert "l1 " in line and "charbonnier " in line and "total " in line


def test_non_finite_loss_is_caught_at_the_next_boundary_and_never_saved(tmp_path: Path) -> None:
    # NaN from iteration 6 on; print/save every 4: found at iteration 8, named as 6, latest.pt stays at 4
    cfg = write_config(tmp_path, logging={**QUIET, "print_every": 4, "save_every": 4})
    assert train.main(["--config", str(cfg), "--set", "model.nan_after=5"]) == 1
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    assert (
        f"non-finite loss (nan) at iteration 6 (epoch 1); training stopped, last good checkpoint: {latest} (iteration 4)"
        in run_log(tmp_path)
    )
    state = load_checkpoint(latest)
    assert state["iteration"] == 4 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert sorted(p.name for p in latest.parent.iterdir()) == ["iter_4.pt", "latest.pt"]


def test_accumulated_micro_batches_give_the_big_batch_update(tmp_path: Path, single_thread) -> None:
    # 16 images: batch 6 -> 2 updates per epoch; batch 3 x 2 -> 5 micro-batches, 2 updates (the same 12 images)
    runs = {"big": (6, 1), "acc": (3, 2)}
    for name, (bs, n) in runs.items():
        cfg = write_config(tmp_path / name, train={"batch_size": bs, "accumulate": n, "iterations": 4}, logging=QUIET)
        assert train.main(["--config", str(cfg), "--set", "model.plain=true"]) == 0
    big, acc = (load_checkpoint(tmp_path / name / "run" / "checkpoints" / "latest.pt") for name in runs)
    assert (big["iteration"], big["epoch"]) == (acc["iteration"], acc["epoch"]) == (4, 2)
    for key in ("model", "ema"):
        for k, v in big[key].items():
            torch.testing.assert_close(acc[key][k], v, rtol=0, atol=1e-6, msg=f"{key}.{k}")
    for i, s in big["optimizer"]["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(acc["optimizer"]["state"][i][k], s[k], rtol=1e-5, atol=1e-9)
    log = run_log(tmp_path / "acc")
    assert (
        "effective batch size 6 (2 accumulated micro-batches per iteration)" in log and "2 iterations per epoch" in log
    )


def test_one_update_gradient_matches_the_big_batch(tmp_path: Path, single_thread) -> None:
    info = train.DistInfo(0, 0, 1, torch.device("cpu"))
    trainers = {}
    for bs, n in ((4, 1), (2, 2), (1, 4)):
        cfg = load_config(
            write_config(tmp_path, train={"batch_size": bs, "accumulate": n, "grad_clip": 0.0}),
            ["model.plain=true"],
        )
        t = train.Trainer(cfg, info)
        batches = iter(t.loader)
        t.step([next(batches) for _ in range(n)])
        trainers[n] = t
    for n in (2, 4):  # float32 sums in another order: measured max |diff| 3.4e-7 (gradients up to ~0.1)
        for (name, p), q in zip(trainers[1].net.named_parameters(), trainers[n].net.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-6, msg=f"accumulate {n}: {name}")
    assert trainers[4].iteration == 1 and trainers[4].batches_done == 4


def test_stop_in_the_middle_of_an_accumulation_resumes_exactly(tmp_path: Path) -> None:
    # batch 3 x 2 -> 2 updates per epoch; SIGTERM in the first micro-batch of iteration 2 -> the run
    # finishes whole iterations, saves at 3 (epoch 1, 2 micro-batches in), resumes to the same weights
    sections = {"train": {"accumulate": 2, "iterations": 6}, "logging": {"save_every": 100, "val_every": 2}}
    once = write_config(tmp_path / "once", **sections)
    assert train.main(["--config", str(once)]) == 0
    split = write_config(tmp_path / "split", **sections)
    assert train.main(["--config", str(split), "--set", "model.sigterm_at=3"]) == 0
    half = load_checkpoint(tmp_path / "split" / "run" / "checkpoints" / "latest.pt")
    assert (half["iteration"], half["epoch"], half["rng"]["loader"]["batches_done"]) == (3, 1, 2)
    assert "stopped by SIGTERM at iteration 3" in run_log(tmp_path / "split")
    assert train.main(["--config", str(split), "--resume"]) == 0
    a, b = (load_checkpoint(tmp_path / r / "run" / "checkpoints" / "latest.pt") for r in ("once", "split"))
    for key in ("model", "ema", "optimizer", "scheduler", "best_psnr", "epoch", "iteration"):
        tensors_equal(a[key], b[key], key)


COUNTING_RUNNER = f"""
import os, sys
from pathlib import Path
sys.path[:0] = [{str(REPO)!r}, {str(TESTS)!r}]
import test_train  # registers tiny_test_net
import train
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP

counts = {{"no_sync": 0, "all_reduce": 0}}
real_init, real_no_sync = DDP.__init__, DDP.no_sync

def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    def hook(state, bucket):
        counts["all_reduce"] += 1
        return allreduce_hook(state, bucket)
    self.register_comm_hook(None, hook)

def no_sync(self):
    counts["no_sync"] += 1
    return real_no_sync(self)

DDP.__init__, DDP.no_sync = init, no_sync
code = train.main()
Path(f"counts_{{os.environ['RANK']}}").write_text(f"{{counts['no_sync']}} {{counts['all_reduce']}}")
sys.exit(code)
"""


def test_ddp_all_reduces_once_per_accumulated_update(tmp_path: Path) -> None:
    # with train.grad_checkpoint=blocks too: TinyNet's body (BatchNorm, dropout) recomputed under DDP
    train_cfg = {"iterations": 4, "batch_size": 2, "accumulate": 2, "grad_checkpoint": "blocks"}
    sections = {"train": train_cfg, "logging": {**QUIET, "print_every": 4, "sample_every": 3}}  # 3: rank 0 only
    cfg = write_config(tmp_path, **sections)
    runner = tmp_path / "runner.py"
    runner.write_text(COUNTING_RUNNER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, str(runner), "--config", str(cfg)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = run_log(tmp_path)
    assert "world size 2, batch size 2 per process, effective batch size 8 (2 accumulated" in log
    assert "2 iterations per epoch" in log and "parameters identical on all 2 ranks" in log
    assert "grad_checkpoint blocks (1 blocks)" in log
    for rank in (0, 1):  # 8 backward passes: 4 inside no_sync, 4 all-reduced (the tiny net is one bucket)
        assert (tmp_path / f"counts_{rank}").read_text() == "4 4"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.accumulate=0", "config key 'train.accumulate' must be >= 1, got 0"),
        ("train.accumulate=1.5", "config key 'train.accumulate' expects int, got float 1.5"),
        ("train.accumulate=true", "config key 'train.accumulate' expects int, got bool True"),
        (
            "train.grad_checkpoint=all",
            "config key 'train.grad_checkpoint' must be one of ['none', 'blocks'], got 'all'",
        ),
    ],
)
def test_loop_config_keys_are_validated(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_config(None, [override])
    assert load_config(None, ["train.accumulate=4"])["train"]["accumulate"] == 4


def test_too_few_images_for_the_accumulated_batch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path, train={"batch_size": 4, "accumulate": 5}, logging=QUIET)
    assert train.main(["--config", str(cfg)]) == 1
    assert "fewer than train.batch_size=4 x train.accumulate=5 x 1 process(es)" in capsys.readouterr().err
