"""A training run's checkpoints: what a checkpoint holds, writing it, and resuming from one exactly.

:class:`Checkpoints` works on any run object with the attributes of :class:`TrainingRun` (train.py's
Trainer): :meth:`Checkpoints.state` is the dict of utils.checkpoint's format, :meth:`Checkpoints.save`
writes it on rank 0 (every rank fails together when the write fails), :meth:`Checkpoints.load_start`
picks the checkpoint to start from (``--resume auto`` / PATH / ``paths.resume``) and
:meth:`Checkpoints.restore` puts weights, optimiser, schedule, RNG streams and the data position back,
so a resumed run continues bit-identically when the world size and ``train.accumulate`` are unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from utils.checkpoint import (
    CheckpointError,
    check_model_name,
    load_checkpoint,
    load_newest,
    load_weights,
    save_checkpoint,
)
from utils.config import ConfigError
from utils.dist import DistInfo, all_ok
from utils.seed import rng_state, seed_everything, set_rng_state

TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "rng", "best_psnr")


class TrainingRun(Protocol):
    """What checkpointing reads and restores of a run (train.py's Trainer)."""

    cfg: dict[str, Any]
    info: DistInfo
    model_name: str
    net: nn.Module
    ema: Any  # utils.ema.ModelEMA or None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    accumulate: int
    iters_per_epoch: int
    iteration: int
    epoch: int
    batches_done: int
    best_psnr: float | None


class Checkpoints:
    """The checkpoints/ folder of one run and the last checkpoint known good."""

    def __init__(self, run_dir: Path, info: DistInfo, log: logging.Logger) -> None:
        self.run_dir, self.info, self.log = run_dir, info, log
        self.dir = run_dir / "checkpoints"
        self.last_good: Path | None = None

    def state(self, run: TrainingRun) -> dict[str, Any]:
        """The checkpoint dict (collective under DDP: gathers every rank's RNG state)."""
        ranks = [None] * self.info.world_size
        if self.info.distributed:
            dist.all_gather_object(ranks, rng_state())
        else:
            ranks = [rng_state()]
        return {
            "model_name": run.model_name,
            "model": run.net.state_dict(),
            "ema": run.ema.state_dict() if run.ema else None,
            "config": run.cfg,
            "iteration": run.iteration,
            "epoch": run.epoch,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": {"ranks": ranks, "loader": {"epoch": run.epoch, "batches_done": run.batches_done}},
            "best_psnr": run.best_psnr,
        }

    def save(self, run: TrainingRun, names: list[str]) -> None:
        """Write the checkpoint under each name (rank 0); a failed write (disk full ...) stops every rank."""
        state = self.state(run)
        err: CheckpointError | None = None
        if self.info.is_main:
            try:
                for name in names:
                    save_checkpoint(state, self.dir / name)
                self.last_good = self.dir / names[0]
                self.log.info(f"saved {', '.join(names)} at iteration {run.iteration}")
            except CheckpointError as e:
                err = e
        if not all_ok(err is None, self.info):
            raise err or CheckpointError("rank 0 could not write a checkpoint (see its error)")

    def last_good_note(self) -> str:
        if self.last_good is None:
            return "no checkpoint was saved before it"
        try:
            iteration = load_checkpoint(self.last_good)["iteration"]
        except CheckpointError:
            iteration = "unreadable"
        return f"last good checkpoint: {self.last_good} (iteration {iteration})"

    def load_start(self, run: TrainingRun, arg: str | None, overwrite: bool) -> bool:
        """Load the checkpoint to start from (``--resume`` / ``paths.resume``) into ``run``.

        Nothing is written. Returns whether this run continues its own run folder (``--resume auto``,
        or a checkpoint inside it without ``--overwrite``) rather than starting a fresh one there; with
        ``--overwrite`` a checkpoint of the old run is loaded first, then that run is moved aside.
        """
        choice = arg if arg is not None else run.cfg["paths"]["resume"]
        if choice is None:
            return False
        if choice == "auto":
            if overwrite:
                raise ConfigError("--overwrite starts a new run and --resume auto continues the old one: use one")
            path, state, skipped = load_newest(self.dir)
            for bad, why in skipped:
                self.log.warning(f"--resume auto: skipped {bad.name}: {why.split(': ', 1)[-1]}")
            if path is None and skipped:
                raise CheckpointError(
                    f"--resume auto: no loadable checkpoint in {self.dir} ({len(skipped)} unreadable, see above); "
                    "pass --overwrite without --resume to move this run aside and start over"
                )
            if path is None:
                self.log.info(f"--resume auto: no checkpoint in {self.dir}, starting from scratch")
                return True
            if skipped:
                self.log.warning(f"--resume auto: falling back to {path}, the newest loadable checkpoint")
            self.restore(run, path, state)
            return True
        path = Path(choice)
        if not path.is_file():
            raise CheckpointError(f"--resume {choice}: checkpoint file does not exist")
        self.restore(run, path, load_checkpoint(path, map_location="cpu"))
        return path.resolve().is_relative_to(self.run_dir.resolve()) and not overwrite

    def restore(self, run: TrainingRun, path: Path, state: dict[str, Any]) -> None:
        """Put a loaded checkpoint's weights, optimiser, schedule, RNG and data position in place."""
        check_model_name(state, run.model_name, path)
        saved_model = (state.get("config") or {}).get("model")
        load_weights(run.net, state["model"], path, "model", saved_model, run.cfg["model"])
        if run.ema is not None:
            if state.get("ema") is None:
                self.log.warning(f"{path} has no EMA weights; EMA restarts from the current weights")
                run.ema.module.load_state_dict(state["model"])
            else:
                load_weights(run.ema.module, state["ema"], path, "EMA")
        missing = [k for k in TRAINING_KEYS if k not in state]
        if missing:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has weights only (no {', '.join(missing)}): it cannot be resumed; "
                "start a new run from scratch or use it with test.py"
            )
        try:
            run.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: optimizer state does not fit train.optimizer ({err})"
            ) from None
        run.scheduler.load_state_dict(state["scheduler"])
        if run.scaler.is_enabled() and state["scaler"]:
            run.scaler.load_state_dict(state["scaler"])
        run.iteration, run.best_psnr = state["iteration"], state["best_psnr"]
        loader = state["rng"]["loader"]
        run.epoch, run.batches_done = loader["epoch"], loader["batches_done"]
        self._restore_streams(run, path, state["rng"]["ranks"])
        self.last_good = path
        self._warn_config_changes(run.cfg, state["config"], path)
        self.log.info(f"resumed from {path} at iteration {run.iteration} (epoch {run.epoch})")

    def _restore_streams(self, run: TrainingRun, path: Path, ranks: list[Any]) -> None:
        """Each rank's RNG states, when the checkpoint's world size and accumulation match; else re-derived."""
        n = run.accumulate
        if (
            len(ranks) == self.info.world_size
            and run.batches_done % n == 0
            and run.batches_done <= run.iters_per_epoch * n
        ):
            set_rng_state(ranks[self.info.rank])
            return
        self.log.warning(
            f"{path} was written by {len(ranks)} process(es) at micro-batch {run.batches_done} of its epoch, "
            f"this run has {self.info.world_size} and train.accumulate={n}: "
            "random states and the data position are re-derived, so the run is not bit-identical"
        )
        seed_everything(run.cfg["seed"] + self.info.rank + 1_000_003 * run.iteration)
        run.epoch, run.batches_done = run.iteration // run.iters_per_epoch, run.iteration % run.iters_per_epoch * n

    def _warn_config_changes(self, cfg: dict[str, Any], old: dict[str, Any], path: Path) -> None:
        def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
            out = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "model" else {f"{prefix}{k}": v})
            return out

        a, b = flat(old), flat(cfg)
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k != "paths.resume")
        if changed:
            self.log.warning(
                f"config differs from {path} in: " + ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed)
            )
