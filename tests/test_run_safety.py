"""Run safety: one run per run folder (refusal, --overwrite, lock), everything checked before the run
folder is touched, one-line errors (read-only, disk full, bad images), --resume auto fallback,
short width-mismatch errors, and train.sh's interpreter / CPU choice."""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_train import run_log, write_config

import train
import utils.checkpoint
from data.prepare import main as prepare_main
from utils.checkpoint import load_checkpoint
from utils.logger import close_logger, open_log_file, setup_logger
from utils.run_folder import LOCK_NAME, _process_start

REPO = Path(__file__).resolve().parents[1]
FAST = {"val_every": 100, "sample_every": 100, "save_every": 2}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, single_thread) -> Path:
    """A finished 4-iteration run (latest.pt, best.pt, iter_2.pt, iter_4.pt); tests copy it before changing it."""
    root = tmp_path_factory.mktemp("finished")
    cfg = write_config(root, train={"iterations": 4}, logging={**FAST, "val_every": 2})
    assert train.main(["--config", str(cfg)]) == 0
    return root


@pytest.fixture
def old_run(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    (tmp_path / "run.yaml").write_text((finished / "run.yaml").read_text().replace(str(finished), str(tmp_path)))
    return tmp_path


def errors(stderr: str) -> list[str]:
    """The ERROR lines of a run's console output (INFO lines about the data come before them)."""
    return [line for line in stderr.splitlines() if " ERROR " in line]


def main(root: Path, *args: str) -> int:
    return train.main(["--config", str(root / "run.yaml"), *args])


def test_fresh_run_into_an_existing_run_is_refused_and_bad_input_changes_nothing(
    old_run: Path, capsys: pytest.CaptureFixture
) -> None:
    before = snapshot(old_run / "run")
    assert main(old_run) == 1
    err = capsys.readouterr().err
    assert "already holds a run (latest.pt, best.pt, 2 iter_*.pt, config.yaml" in err
    assert "--resume auto" in err and "--set name=" in err and "--overwrite" in err
    cases = {
        ("--set", "train.batch_size=0"): "config key 'train.batch_size' must be >= 1, got 0",
        ("--set", "train.batch_size=-3"): "config key 'train.batch_size' must be >= 1, got -3",
        ("--set", "train.optimizer.lr=-1e-3"): "config key 'train.optimizer.lr' must be >= 0, got -0.001",
        ("--set", "train.iterations=0"): "config key 'train.iterations' must be >= 1, got 0",
        ("--resume", str(old_run / "nope.pt")): "nope.pt: checkpoint file does not exist",
        (
            "--set",
            "model.width=-2",
        ): "config key 'model' {'name': 'tiny_test_net', 'width': -2} does not build a network",
        ("--set", "ssm.backend=triton"): "ssm.backend=triton needs CUDA tensors, got cpu",
        (
            "--set",
            "train.scheduler.type=multistep",
            "train.scheduler.milestones=[a]",
        ): "milestones must be non-negative",
    }
    for args, message in cases.items():
        assert main(old_run, *args) == 1
        err = errors(capsys.readouterr().err)
        assert len(err) == 1 and message in err[0], err
    assert snapshot(old_run / "run") == before  # config.yaml, train.log, checkpoints untouched
    assert main(old_run, "--set", "name=fresh", "train.batch_size=0") == 1
    assert not (old_run / "fresh").exists()  # no stray folder


def test_overwrite_moves_the_old_run_aside(old_run: Path) -> None:
    before = snapshot(old_run / "run")
    assert main(old_run, "--overwrite", "--stop-at", "1") == 0
    aside = [p for p in old_run.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before  # moved whole, nothing deleted
    assert load_checkpoint(aside[0] / "checkpoints" / "best.pt")["iteration"] in (2, 4)
    assert f"moved the previous run {old_run / 'run'} to {aside[0]}" in run_log(old_run)
    assert load_checkpoint(old_run / "run" / "checkpoints" / "latest.pt")["iteration"] == 1
    assert not (old_run / "run" / LOCK_NAME).exists()  # released at the end

    own = old_run / "run" / "checkpoints" / "latest.pt"  # a checkpoint of the run being moved aside
    assert main(old_run, "--overwrite", "--resume", str(own), "--stop-at", "2") == 0
    assert len([p for p in old_run.iterdir() if p.name.startswith("run.old-")]) == 2
    assert load_checkpoint(own)["iteration"] == 2 and "resumed from" in run_log(old_run)


def _write_lock(run_dir: Path, pid: int, host: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host, "process_start": _process_start(pid), "started": "t0"}
    (run_dir / LOCK_NAME).write_text(json.dumps(record))


def test_live_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = write_config(tmp_path, train={"iterations": 2}, logging=FAST)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path / "run", other.pid, socket.gethostname())
        assert train.main(["--config", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert f"is in use by a running training (pid {other.pid} on host {socket.gethostname()}" in err
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        other.kill()
        other.wait()
    assert train.main(["--config", str(cfg)]) == 0  # the same lock, now of a dead process
    assert f"took over the stale lock {tmp_path / 'run' / LOCK_NAME} left by pid {other.pid}" in run_log(tmp_path)
    assert not (tmp_path / "run" / LOCK_NAME).exists()

    _write_lock(tmp_path / "run", 12345, "another-host")
    assert train.main(["--config", str(cfg), "--resume", "auto"]) == 1
    err = capsys.readouterr().err
    assert "pid 12345 on host another-host" in err and f"delete {tmp_path / 'run' / LOCK_NAME}" in err


def _deny_writes_under(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if str(self).startswith(str(root)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)


def test_read_only_experiments_root_and_prepare_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    cfg = write_config(tmp_path / "cfg", train={"iterations": 2}, logging=FAST)
    ro = tmp_path / "ro"
    _deny_writes_under(monkeypatch, ro)
    assert train.main(["--config", str(cfg), "--set", f"paths.experiments_root={ro}"]) == 1
    err = errors(capsys.readouterr().err)
    assert len(err) == 1 and f"cannot create run folder {ro / 'run'}: no permission to write {ro / 'run'}" in err[0]

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / "a.png")
    assert prepare_main(["--src", str(src), "--out", str(ro / "prep"), "--size", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --out '{ro / 'prep'}': no permission to write") and len(err.splitlines()) == 1


def test_disk_full_names_the_file_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, train={"iterations": 6}, logging={**FAST, "keep_iter_checkpoints": False})
    real_write, calls = utils.checkpoint._write_all, []

    def full_disk(fd: int, data: memoryview) -> None:
        calls.append(1)
        if len(calls) == 2:  # the iteration-4 latest.pt
            os.close(fd)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    monkeypatch.setattr(utils.checkpoint, "_write_all", full_disk)
    assert train.main(["--config", str(cfg)]) == 1
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    assert f"disk full writing {latest} (No space left on device); the previous latest.pt is unchanged" in run_log(
        tmp_path
    )
    assert load_checkpoint(latest)["iteration"] == 2
    assert [p.name for p in latest.parent.iterdir()] == ["latest.pt"]  # no temp file left


def _faces(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"f{i}.png" for i in range(n)]
    for p in paths:
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(p)
    return paths


def test_bad_training_images_before_and_during_the_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    faces = _faces(tmp_path / "hr", 6)
    train_data = {"type": "hr_folder", "hr_dir": str(tmp_path / "hr"), "hr_size": 16, "num_workers": 0}
    cfg = write_config(tmp_path, data={"train": train_data}, train={"iterations": 9, "batch_size": 2}, logging=FAST)
    good = faces[3].read_bytes()
    faces[3].write_bytes(good[: len(good) // 2])
    assert train.main(["--config", str(cfg)]) == 1  # the header scan finds it before the run
    err = capsys.readouterr().err
    assert f"image '{faces[3]}' is truncated" in err and "skip_bad=true" in err
    assert not (tmp_path / "run").exists()

    idat = good.index(b"IDAT") + 8  # complete file, scrambled pixels: found only when decoded
    faces[3].write_bytes(good[:idat] + bytes(32) + good[idat + 32 :])
    assert train.main(["--config", str(cfg)]) == 1
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    it = load_checkpoint(latest)["iteration"]
    assert it < 9
    assert f"cannot read image file '{faces[3]}'" in run_log(tmp_path)
    assert f"saved {latest} at iteration {it} first" in run_log(tmp_path)

    assert train.main(["--config", str(cfg), "--set", "data.train.skip_bad=true", "name=skip"]) == 0
    assert f"skipping bad file: cannot read image file '{faces[3]}'" in run_log(tmp_path, "skip")  # in train.log


def test_resume_auto_falls_back_to_the_newest_loadable_checkpoint(old_run: Path, capsys: pytest.CaptureFixture) -> None:
    ckpts = old_run / "run" / "checkpoints"
    (ckpts / "latest.pt").write_bytes(b"garbage" * 10)
    (ckpts / "iter_4.pt").write_bytes((ckpts / "iter_4.pt").read_bytes()[:300])
    assert main(old_run, "--resume", "auto", "--set", "train.iterations=3") == 0
    log = run_log(old_run)
    assert "--resume auto: skipped latest.pt: " in log and "--resume auto: skipped iter_4.pt: " in log
    assert f"falling back to {ckpts / 'iter_2.pt'}" in log and "resumed from" in log
    assert "weights_only" not in log
    assert load_checkpoint(ckpts / "latest.pt")["iteration"] == 3

    for name in ("latest.pt", "iter_2.pt", "iter_3.pt"):
        if (ckpts / name).exists():
            (ckpts / name).write_bytes(b"x")
    assert main(old_run, "--resume", "auto") == 1
    assert "--resume auto: no loadable checkpoint in" in capsys.readouterr().err


def test_checkpoint_of_another_width_gives_a_short_summary(old_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(old_run, "--resume", "auto", "--set", "model.width=4") == 1
    err = errors(capsys.readouterr().err)
    assert len(err) == 1, err
    err = err[0]
    assert "tensors differ in shape, e.g. body.0.weight: checkpoint (6, 3, 3, 3) vs model (4, 3, 3, 3)" in err
    assert "model.width: None -> 4" in err


def test_train_sh_finds_the_venv_and_runs_one_cpu_process(tmp_path: Path) -> None:
    shutil.copy(REPO / "train.sh", tmp_path / "train.sh")
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    # a stand-in interpreter: reports no GPU, records how train.sh called it
    fake.write_text(f'#!/bin/sh\nif [ "$1" = -c ]; then echo 0; else echo "$@" > {tmp_path}/called; fi\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    done = subprocess.run(
        ["bash", str(tmp_path / "train.sh"), "c.yaml", "4", "--set", "a=1"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "called").read_text().split() == ["train.py", "--config", "c.yaml", "--set", "a=1"]
    assert "no GPU visible, so one CPU process (NGPUS=4 ignored" in done.stderr
    broken = tmp_path / "broken_python"
    broken.write_text("#!/bin/sh\nexit 1\n")  # an interpreter without torch
    broken.chmod(0o755)
    done = subprocess.run(
        ["bash", str(tmp_path / "train.sh")], env={**env, "PYTHON": str(broken)}, capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"train.sh: {broken} cannot import torch; run 'make setup' (creates .venv) or set PYTHON=/path/to/python"
    ]


def test_a_full_disk_under_train_log_is_one_console_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = setup_logger(None)
    open_log_file(log, tmp_path / "train.log")
    log.info("written")

    def full(text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    handler = next(h for h in log.handlers if isinstance(h, logging.FileHandler))
    handler.stream.write = full
    log.warning("lost 1")
    log.warning("lost 2")
    close_logger()
    err = capsys.readouterr().err
    assert err.count(f"could not write {tmp_path / 'train.log'}: [Errno 28] No space left on device") == 1
    assert "Traceback" not in err and "written" in (tmp_path / "train.log").read_text()
