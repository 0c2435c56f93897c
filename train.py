"""Train a face super-resolution network from one YAML experiment file.

    python train.py --config configs/demo.yaml [--set train.batch_size=8 ...] [--resume [auto|PATH]]
    torchrun --nproc-per-node 4 train.py --config ...      (DistributedDataParallel, one GPU per process)

Rank 0 writes ``experiments/<name>/``: config.yaml, train.log, tb/, checkpoints/ (latest.pt,
iter_<n>.pt, best.pt), samples/, and holds run.lock (pid, host) while it runs. Everything (config,
data folders with a header scan of every image, the resume checkpoint) is checked before the
run folder is touched. A run folder belongs to one run: a fresh run into an existing one is
refused (``--resume auto`` continues it, ``--overwrite`` moves it aside to
``<name>.old-<timestamp>``; nothing is deleted). ``--resume auto`` continues from latest.pt, or
from the newest loadable iter_<n>.pt when latest.pt is unreadable, exactly where it stopped
(same weights as an uninterrupted run on CPU). SIGTERM / SIGINT save latest.pt at the next
iteration boundary and exit with status 0; a non-finite loss stops the run naming the
iteration and the last good checkpoint; an unreadable training image met mid-run saves
latest.pt first and names both.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning, so a shared, loaded CPU does not
# slow training 6x (README, "Threads"); OMP_WAIT_POLICY / OMP_NUM_THREADS set by the user win.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import hashlib
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import model.ssm
from data import build_dataset
from data.io import DataError
from metrics import table as metric_table
from metrics.io import summarize
from metrics.tensor import tensor_to_uint8
from model.build import build_network, compile_network
from model.losses import WeightedLoss
from model.registry import check_training_io
from utils import figure
from utils.authors import refuse_authors_flags
from utils.checkpoint import (
    CheckpointError,
    check_model_name,
    load_checkpoint,
    load_newest,
    load_weights,
    save_checkpoint,
)
from utils.cli import ArgumentParser, os_error_message
from utils.config import ConfigError, load_config, save_config
from utils.dist import DistInfo, all_ok, cleanup, init_distributed, peer_failure
from utils.ema import ModelEMA
from utils.grad_checkpoint import enable_grad_checkpoint
from utils.logger import close_logger, open_log_file, setup_logger
from utils.run_folder import RunFolderError, RunLock, claim
from utils.sampler import ResumableSampler
from utils.scheduler import build_scheduler
from utils.seed import ItemSeeded, preserved_rng, rng_state, seed_everything, set_rng_state
from utils.value_range import from_network, to_network

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NO_DECAY_NAMES = ("A_log", "A_logs", "D", "Ds")
SAMPLE_IMAGES = 4


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, bad set-up); the message says why and where."""


RUN_ERRORS = (ConfigError, CheckpointError, TrainingError, DataError, RunFolderError)


def data_error_message(err: DataError) -> str:
    """The DataError's own line; a DataLoader worker's re-raised copy carries the worker traceback too."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught "):
        return lines[-1].split("DataError: ", 1)[-1]
    return str(err)


def check_batch_fits(batch_size: int, hr_size: int) -> None:
    """One batch's LR and HR float32 tensors must fit in this machine's memory (checked before any data is read)."""
    need = 2 * batch_size * 3 * hr_size**2 * 4
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check
        return
    if need > total:
        raise ConfigError(
            f"train.batch_size={batch_size} at data.train.hr_size={hr_size}: one batch's LR and HR tensors take "
            f"{need / 2**30:.1f} GiB, more than this machine's {total / 2**30:.1f} GiB; lower either"
        )


def param_groups(net: nn.Module, weight_decay: float, policy: str = "weights_only") -> list[dict[str, Any]]:
    """Policy ``weights_only``: biases, norms, SSM ``A_log``/``D`` and ``_no_weight_decay`` params are exempt.
    Policy ``all`` (the released training codes: AdamW over ``net.parameters()``): every parameter decays,
    the exempt group stays empty."""
    if policy not in ("weights_only", "all"):
        raise ConfigError(
            f"config key 'train.optimizer.weight_decay_policy' must be weights_only or all, got {policy!r}"
        )
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        exempt = policy == "weights_only" and (
            p.ndim <= 1 or getattr(p, "_no_weight_decay", False) or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES
        )
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(net: nn.Module, opt: dict[str, Any]) -> torch.optim.Optimizer:
    betas = tuple(opt["betas"])
    ok = len(betas) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
    if not ok:
        raise ConfigError(f"config key 'train.optimizer.betas' needs two numbers in [0, 1), got {opt['betas']!r}")
    cls = torch.optim.AdamW if opt["type"] == "adamw" else torch.optim.Adam
    groups = param_groups(net, float(opt["weight_decay"]), opt.get("weight_decay_policy", "weights_only"))
    return cls(groups, lr=float(opt["lr"]), betas=betas)


def validation_line(summary: dict[str, Any]) -> str:
    """``PSNR 21.7700 dB  SSIM 0.5671``, then the images left out of a mean (PSNR inf of identical images)."""
    parts, notes = [], ""
    for key in metric_table.VALIDATION:
        m = metric_table.METRICS[key]
        parts.append(f"{m.label} {summary[key]:.4f}" + (f" {m.unit}" if m.unit else ""))
        if summary.get(f"{key}_excluded"):
            notes += f"  ({len(summary[key + '_excluded'])} non-finite images left out of the {m.label} mean)"
    return "  ".join(parts) + notes


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor of a state_dict (names, dtypes and bytes), for cross-rank checks."""
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class StopRequest:
    """SIGTERM / SIGINT handler: ask the loop to save and stop at the next iteration boundary."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal_name = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Holds the network, optimisation state and run folder of one training run.

    Construction and :meth:`load_start` only check and build (nothing is written);
    :meth:`open_run_folder` then claims the run folder, and :meth:`fit` trains.
    """

    def __init__(self, cfg: dict[str, Any], info: DistInfo, stop_at: int | None = None) -> None:
        self.cfg, self.info, self.stop_at = cfg, info, stop_at
        self.device = info.device
        tcfg = cfg["train"]
        if (tcfg["iterations"] is None) == (tcfg["epochs"] is None):
            raise ConfigError(
                "set exactly one of train.iterations and train.epochs "
                f"(got iterations={tcfg['iterations']}, epochs={tcfg['epochs']})"
            )
        self.run_dir = Path(cfg["paths"]["experiments_root"]) / cfg["name"]
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.lock: RunLock | None = None
        self.log = logging.getLogger("train")
        try:
            scan = model.ssm.resolve_backend(cfg["ssm"]["backend"], self.device, cfg["ssm"]["deterministic"])
        except (ValueError, RuntimeError) as err:
            raise ConfigError(str(err)) from None
        self.scan_backend = scan.name

        seed_everything(cfg["seed"])  # the same initial weights on every rank
        try:
            self.net = build_network(cfg, self.device, scan=scan)
        except (ValueError, TypeError, RuntimeError) as err:  # e.g. model.embed_dim=0 rejected by torch
            raise ConfigError(f"config key 'model' {cfg['model']} does not build a network: {err}") from None
        try:
            self.checkpointed_blocks = enable_grad_checkpoint(self.net, tcfg["grad_checkpoint"])
        except ValueError as err:
            raise ConfigError(str(err)) from None
        seed_everything(cfg["seed"] + info.rank)  # then per-rank streams (dropout ...)
        self.model_name = cfg["model"]["name"]
        self.ddp: nn.Module = self.net  # wrapped in DistributedDataParallel by open_run_folder
        self.input_key = "lr_small" if getattr(self.net, "lr_input", False) else "lr"  # LR-in nets: SwinIR, MambaIR
        self.ema = ModelEMA(self.net, float(tcfg["ema"])) if tcfg["ema"] else None
        compile_network(self.net, tcfg["compile"])  # in place: checkpoints keep the uncompiled keys
        try:
            self.criterion = WeightedLoss(tcfg["losses"])
        except ValueError as err:  # a bad train.losses entry: a config error, named by the loss module
            raise ConfigError(str(err)) from err
        self.optimizer = build_optimizer(self.net, tcfg["optimizer"])
        self.amp = tcfg["amp"]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")

        bs, self.accumulate = tcfg["batch_size"], tcfg["accumulate"]
        check_batch_fits(bs, cfg["data"]["train"]["hr_size"])
        self.train_set = build_dataset(cfg["data"]["train"], cfg["scale"], train=True)
        self.sampler = ResumableSampler(self.train_set, bs, info.world_size, info.rank, cfg["seed"])
        self.iters_per_epoch = self.sampler.batches_per_epoch // self.accumulate  # optimizer updates
        if self.iters_per_epoch == 0:
            raise TrainingError(
                f"training set has {len(self.train_set)} images: fewer than train.batch_size={bs} "
                f"x train.accumulate={self.accumulate} x {info.world_size} process(es); "
                "lower train.batch_size or train.accumulate, or add data"
            )
        self.loader_gen = torch.Generator()
        self.loader = DataLoader(
            ItemSeeded(self.train_set, cfg["seed"]),
            batch_size=bs,
            sampler=self.sampler,
            num_workers=cfg["data"]["train"]["num_workers"],
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=cfg["data"]["train"]["num_workers"] > 0,
            generator=self.loader_gen,
        )
        self.total_iters = self._total_iterations(tcfg)
        try:
            self.scheduler = build_scheduler(self.optimizer, tcfg["scheduler"], self.iters_per_epoch, self.total_iters)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.extra_targets = sorted(self.criterion.targets - {"hr"})  # e.g. DIC's landmark heatmaps
        marks = getattr(self.train_set, "landmarks", None)
        data_targets, points = ({"heatmap"}, marks.n_points) if marks is not None else (set(), None)
        try:
            io = (self.criterion.outputs, self.criterion.targets, data_targets, points)
            check_training_io(self.net, self.model_name, *io)
        except ValueError as err:
            raise ConfigError(str(err)) from None

        val_cfg = cfg["data"]["val"]
        self.val_set = build_dataset(val_cfg, cfg["scale"], train=False)  # None for type none
        for key, dataset in (("train", self.train_set), ("val", self.val_set)):
            if self.input_key == "lr_small" and getattr(dataset, "upsampled", False):
                raise ConfigError(
                    f"model {self.model_name!r} takes the HR/{cfg['scale']} LR, but data.{key}.lr_dir "
                    "holds upsampled LR images; point it at the small LR or use type hr_folder"
                )
        self.iteration = self.epoch = self.batches_done = 0
        self.best_psnr: float | None = None
        self.last_good: Path | None = None
        self.writer = None
        self.host_group = None  # gloo group for per-iteration host flags under DDP (made in fit)
        # read only at print / save / validation boundaries: no host sync per step
        self._window: torch.Tensor | None = None  # summed [total, *terms] of the steps since the last print
        self._bad_iter = torch.zeros((), dtype=torch.int64, device=self.device)  # first non-finite iteration
        self._bad_loss = torch.zeros((), device=self.device)  # its loss
        self._epochs: dict[int, int] = {}  # epoch of each iteration since the last check

    def _total_iterations(self, tcfg: dict[str, Any]) -> int:
        iters, epochs = tcfg["iterations"], tcfg["epochs"]
        return iters if iters is not None else epochs * self.iters_per_epoch

    # ----------------------------------------------------------------- run folder
    def load_start(self, arg: str | None, overwrite: bool) -> bool:
        """Load the checkpoint to start from (``--resume`` / ``paths.resume``) into the network and optimiser.

        Nothing is written. Returns whether this run continues its own run folder (``--resume auto``,
        or a checkpoint inside it without ``--overwrite``) rather than starting a fresh one there; with
        ``--overwrite`` a checkpoint of the old run is loaded first, then that run is moved aside.
        """
        choice = arg if arg is not None else self.cfg["paths"]["resume"]
        if choice is None:
            return False
        if choice == "auto":
            if overwrite:
                raise ConfigError("--overwrite starts a new run and --resume auto continues the old one: use one")
            path, state, skipped = load_newest(self.ckpt_dir)
            for bad, why in skipped:
                self.log.warning(f"--resume auto: skipped {bad.name}: {why.split(': ', 1)[-1]}")
            if path is None and skipped:
                raise CheckpointError(
                    f"--resume auto: no loadable checkpoint in {self.ckpt_dir} ({len(skipped)} unreadable, see above); "
                    "pass --overwrite without --resume to move this run aside and start over"
                )
            if path is None:
                self.log.info(f"--resume auto: no checkpoint in {self.ckpt_dir}, starting from scratch")
                return True
            if skipped:
                self.log.warning(f"--resume auto: falling back to {path}, the newest loadable checkpoint")
            self.resume(path, state)
            return True
        path = Path(choice)
        if not path.is_file():
            raise CheckpointError(f"--resume {choice}: checkpoint file does not exist")
        self.resume(path, load_checkpoint(path, map_location="cpu"))
        return path.resolve().is_relative_to(self.run_dir.resolve()) and not overwrite

    def open_run_folder(self, continuing: bool, overwrite: bool) -> None:
        """Claim the run folder (rank 0: lock, refuse or move aside an old run, config.yaml, train.log, tb/),
        then wrap the network for DDP. Every rank fails together when rank 0 cannot."""
        err: Exception | None = None
        if self.info.is_main:
            notes: list[str] = []
            try:
                self.lock = claim(self.run_dir, continuing, overwrite, notes)
                for sub in ("checkpoints", "samples"):
                    (self.run_dir / sub).mkdir(exist_ok=True)
                save_config(self.cfg, self.run_dir / "config.yaml")
                open_log_file(self.log, self.run_dir / "train.log")
                for note in notes:
                    self.log.warning(note)
                if self.cfg["logging"]["tensorboard"]:
                    from torch.utils.tensorboard import SummaryWriter

                    self.writer = SummaryWriter(str(self.run_dir / "tb"))
            except RunFolderError as e:
                err = e
            except OSError as e:
                err = RunFolderError(f"cannot set up run folder {self.run_dir}: {os_error_message(e)}")
        if not all_ok(err is None, self.info):
            raise err or RunFolderError(f"rank 0 could not set up run folder {self.run_dir} (see its error)")
        if self.info.distributed:
            self.ddp = DistributedDataParallel(
                self.net, device_ids=[self.device] if self.device.type == "cuda" else None
            )

    def close(self) -> None:
        """Release the run folder (the lock file) and the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ----------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """The checkpoint dict (collective under DDP: gathers every rank's RNG state)."""
        ranks = [None] * self.info.world_size
        if self.info.distributed:
            dist.all_gather_object(ranks, rng_state())
        else:
            ranks = [rng_state()]
        return {
            "model_name": self.model_name,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "config": self.cfg,
            "iteration": self.iteration,
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"ranks": ranks, "loader": {"epoch": self.epoch, "batches_done": self.batches_done}},
            "best_psnr": self.best_psnr,
        }

    def save(self, names: list[str]) -> None:
        """Write the checkpoint under each name (rank 0); a failed write (disk full ...) stops every rank.
        Weights trained on a non-finite loss are never written: that stops the run instead."""
        self._raise_if_nonfinite()
        state = self.state()
        err: CheckpointError | None = None
        if self.info.is_main:
            try:
                for name in names:
                    save_checkpoint(state, self.ckpt_dir / name)
                self.last_good = self.ckpt_dir / names[0]
                self.log.info(f"saved {', '.join(names)} at iteration {self.iteration}")
            except CheckpointError as e:
                err = e
        if not all_ok(err is None, self.info):
            raise err or CheckpointError("rank 0 could not write a checkpoint (see its error)")

    def resume(self, path: Path, state: dict[str, Any]) -> None:
        """Put a loaded checkpoint's weights, optimiser, schedule, RNG and data position in place."""
        check_model_name(state, self.model_name, path)
        load_weights(
            self.net, state["model"], path, "model", (state.get("config") or {}).get("model"), self.cfg["model"]
        )
        if self.ema is not None:
            if state.get("ema") is None:
                self.log.warning(f"{path} has no EMA weights; EMA restarts from the current weights")
                self.ema.module.load_state_dict(state["model"])
            else:
                load_weights(self.ema.module, state["ema"], path, "EMA")
        missing = [k for k in ("optimizer", "scheduler", "scaler", "rng", "best_psnr") if k not in state]
        if missing:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has weights only (no {', '.join(missing)}): it cannot be resumed; "
                "start a new run from scratch or use it with test.py"
            )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: optimizer state does not fit train.optimizer ({err})"
            ) from None
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.best_psnr = state["iteration"], state["best_psnr"]
        loader = state["rng"]["loader"]
        self.epoch, self.batches_done = loader["epoch"], loader["batches_done"]
        ranks = state["rng"]["ranks"]
        n = self.accumulate
        if (
            len(ranks) == self.info.world_size
            and self.batches_done % n == 0
            and self.batches_done <= self.iters_per_epoch * n
        ):
            set_rng_state(ranks[self.info.rank])
        else:
            self.log.warning(
                f"{path} was written by {len(ranks)} process(es) at micro-batch {self.batches_done} of its epoch, "
                f"this run has {self.info.world_size} and train.accumulate={n}: "
                "random states and the data position are re-derived, so the run is not bit-identical"
            )
            seed_everything(self.cfg["seed"] + self.info.rank + 1_000_003 * self.iteration)
            self.epoch, self.batches_done = (
                self.iteration // self.iters_per_epoch,
                self.iteration % self.iters_per_epoch * n,
            )
        self.last_good = path
        self._warn_config_changes(state["config"], path)
        self.log.info(f"resumed from {path} at iteration {self.iteration} (epoch {self.epoch})")

    def _warn_config_changes(self, old: dict[str, Any], path: Path) -> None:
        def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
            out = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "model" else {f"{prefix}{k}": v})
            return out

        a, b = flat(old), flat(self.cfg)
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k != "paths.resume")
        if changed:
            self.log.warning(
                f"config differs from {path} in: " + ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed)
            )

    # ----------------------------------------------------------------- evaluation
    def _eval_net(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def _forward(self, net: nn.Module, lr: torch.Tensor) -> torch.Tensor:
        """Network-range output for network-range input (``data.value_range``)."""
        with torch.autocast(self.device.type, dtype=AMP_DTYPES.get(self.amp), enabled=self.amp != "none"):
            return net(lr)

    def _predict(self, net: nn.Module, lr: torch.Tensor) -> torch.Tensor:
        """[0, 1] LR -> [0, 1] SR (float32, not clamped), through the network's value range."""
        value_range = self.cfg["data"]["value_range"]
        return from_network(self._forward(net, to_network(lr, value_range)).float(), value_range)

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Means of the table's validation metrics (PSNR / SSIM, fsr convention; metrics.io's averaging rule) of
        the evaluation weights (EMA when on) over data.val: ``count``, ``<metric>``, ``<metric>_excluded``."""
        net = self._eval_net()
        was_training = net.training
        net.eval()
        loader = DataLoader(self.val_set, batch_size=self.cfg["train"]["batch_size"], num_workers=0)
        scorers = metric_table.build_scorers(metric_table.VALIDATION)
        rows: list[dict[str, Any]] = []
        max_images = self.cfg["data"]["val"]["max_images"]
        for batch in loader:
            sr = self._predict(net, batch[self.input_key].to(self.device))
            for name, pred, gt in zip(batch["name"], tensor_to_uint8(sr), tensor_to_uint8(batch["hr"])):
                rows.append({"name": name, **{key: fn(pred, gt) for key, fn in scorers.items()}})
            if max_images is not None and len(rows) >= max_images:
                rows = rows[:max_images]
                break
        net.train(was_training)
        return summarize(rows, list(scorers))

    @torch.no_grad()
    def save_samples(self, fallback: dict[str, Any]) -> None:
        """Labelled LR | SR | HR grid (one row per image, tiles >= 128 px) of the first validation images."""
        batch = next(iter(DataLoader(self.val_set, batch_size=SAMPLE_IMAGES))) if self.val_set is not None else fallback
        lr = batch["lr_small"] if "lr_small" in batch else batch["lr"]
        lr, net_in, hr = lr[:SAMPLE_IMAGES], batch[self.input_key][:SAMPLE_IMAGES], batch["hr"][:SAMPLE_IMAGES]
        net = self._eval_net()
        was_training = net.training
        net.eval()
        sr = self._predict(net, net_in.to(self.device)).clamp(0, 1).cpu()
        net.train(was_training)
        rows = [list(images) for images in zip(tensor_to_uint8(lr), tensor_to_uint8(sr), tensor_to_uint8(hr))]
        tile = min(256, max(128, 2 * hr.shape[-1]))
        fig = figure.grid(rows, ["LR", f"SR (iter {self.iteration})", "HR"], tile=tile)
        figure.save_figure(fig, self.run_dir / "samples" / f"iter_{self.iteration:07d}.png")
        if self.writer is not None:
            self.writer.add_image("samples/LR_SR_HR", np.asarray(fig), self.iteration, dataformats="HWC")

    def evaluate(self) -> None:
        """Validation on rank 0 (with RNG states untouched); best.pt when PSNR improves."""
        improved = False
        if self.info.is_main:
            with preserved_rng():
                m = self.validate()
            tag = "EMA" if self.ema is not None else "model"
            self.log.info(
                f"validation iter {self.iteration} ({tag} weights, fsr convention, {m['count']} images): "
                + validation_line(m)
            )
            if self.writer is not None:
                for key in metric_table.VALIDATION:
                    self.writer.add_scalar(f"val/{key}", m[key], self.iteration)
            improved = math.isfinite(m["psnr"]) and (self.best_psnr is None or m["psnr"] > self.best_psnr)
            if improved:
                self.best_psnr = m["psnr"]
        if self.info.distributed:
            best = math.nan if self.best_psnr is None else self.best_psnr
            flags = torch.tensor([float(improved), best], dtype=torch.float64, device=self.device)
            dist.broadcast(flags, 0)
            improved, best = bool(flags[0]), float(flags[1])
            self.best_psnr = None if math.isnan(best) else best
        if improved:
            self.save(["best.pt"])

    # ----------------------------------------------------------------- training
    def fit(self) -> int:
        if self.iteration >= self.total_iters:
            self.log.info(
                f"already trained {self.iteration} of {self.total_iters} iterations; nothing to do "
                "(raise train.iterations to go on, or --overwrite without --resume to start again)"
            )
            return 0
        tcfg, lcfg = self.cfg["train"], self.cfg["logging"]
        bs, ws, n = tcfg["batch_size"], self.info.world_size, self.accumulate
        n_params = sum(p.numel() for p in self.net.parameters())
        self.log.info(
            f"model {self.model_name} ({n_params / 1e6:.3f}M parameters) on {self.device}, ssm backend "
            f"{self.scan_backend} (ssm.backend {self.cfg['ssm']['backend']}); world size {ws}, batch size {bs} per process, effective batch size {bs * ws * n}"
            + (f" ({n} accumulated micro-batches per iteration)" if n > 1 else "")
            + "; "
            f"{len(self.train_set)} training images, {self.iters_per_epoch} iterations per epoch, "
            f"{self.total_iters} iterations; amp {self.amp}, ema {tcfg['ema']}, compile {tcfg['compile']}, "
            f"grad_checkpoint {tcfg['grad_checkpoint']}"
            + (f" ({self.checkpointed_blocks} blocks)" if self.checkpointed_blocks else "")
            + f"; run folder {self.run_dir}"
        )
        stop = StopRequest()
        bar = tqdm(
            total=self.total_iters,
            initial=self.iteration,
            desc=self.cfg["name"],
            unit="it",
            dynamic_ncols=True,
            disable=not (self.info.is_main and lcfg["progress_bar"]),
        )
        if self.info.distributed and self.host_group is None:
            self.host_group = dist.new_group(backend="gloo")  # host flags without a device sync
        window_n, window_t = 0, time.perf_counter()
        try:
            while self.iteration < self.total_iters:
                self.sampler.set_position(self.epoch, self.batches_done)
                self.loader_gen.manual_seed(self.cfg["seed"] * 1_000_003 + self.epoch)
                batches = iter(self.loader)
                epoch = self.epoch
                while self.epoch == epoch and (micro := self._next_batches(batches, stop)) is not None:
                    stop_now = micro.pop()
                    self.step(micro)
                    bar.update(1)
                    window_n += 1
                    it = self.iteration
                    log_now = it % lcfg["print_every"] == 0 or it == self.total_iters
                    val_now = self.val_set is not None and it % lcfg["val_every"] == 0
                    sample_now = it % lcfg["sample_every"] == 0  # rank 0 writes it; every rank checks
                    save_now = it % lcfg["save_every"] == 0
                    stopping = stop_now or (self.stop_at is not None and it >= self.stop_at)
                    if log_now or val_now or sample_now or stopping:  # the only device reads of the loop
                        self._raise_if_nonfinite()
                    if log_now:
                        self._log_train(window_n, window_n / (time.perf_counter() - window_t))
                        window_n, window_t = 0, time.perf_counter()
                    if val_now:
                        self.evaluate()
                    if sample_now and self.info.is_main:
                        with preserved_rng():
                            self.save_samples(micro[-1])
                    if save_now:
                        self.save(["latest.pt"] + ([f"iter_{it}.pt"] if lcfg["keep_iter_checkpoints"] else []))
                    if stopping:
                        if not save_now:
                            self.save(["latest.pt"])
                        why = stop.signal_name or f"--stop-at {self.stop_at}"
                        self.log.info(
                            f"stopped by {why} at iteration {it}; continue with --resume auto "
                            f"(checkpoint {self.ckpt_dir / 'latest.pt'})"
                        )
                        return 0
                    if it >= self.total_iters:
                        break
            if self.val_set is not None and self.iteration % lcfg["val_every"]:
                self.evaluate()
            if self.iteration % lcfg["save_every"]:
                self.save(["latest.pt"])
            self._check_ranks_agree()
            self.log.info(f"finished {self.iteration} iterations; best PSNR {self.best_psnr}")
            return 0
        except OSError as err:  # disk full / unwritable while writing samples, TensorBoard, ...
            raise TrainingError(
                f"{os_error_message(err)} at iteration {self.iteration}; {self._last_good_note()}"
            ) from None
        finally:
            bar.close()
            stop.restore()

    def _next_batches(self, batches: Any, stop: StopRequest) -> list[Any] | None:
        """The ``train.accumulate`` micro-batches of the next iteration followed by whether every rank
        must stop after it (a signal arrived), or None at the end of the epoch. All are fetched before
        any is used, so an image that fails to decode on any rank finds the state at an iteration
        boundary: latest.pt is saved and every rank stops naming the file. Under DDP the ranks agree
        through one host-side (gloo) all-reduce per iteration, which does not wait for the device."""
        err, micro = None, []
        try:
            for _ in range(self.accumulate):
                micro.append(next(batches))
        except StopIteration:
            return None
        except DataError as e:
            err = e
        bad, stop_now = self._agree(err is not None, stop.signal_name is not None)
        if not bad:
            return [*micro, stop_now]
        why = data_error_message(err) if err is not None else "another process met an unreadable training image"
        try:
            self.save(["latest.pt"])
            saved = f"saved {self.ckpt_dir / 'latest.pt'} at iteration {self.iteration} first"
        except CheckpointError as save_err:
            saved = f"could not save latest.pt ({save_err}); {self._last_good_note()}"
        raise TrainingError(f"{why}; {saved}; fix or remove the file, then continue with --resume auto")

    def _agree(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over the ranks: a CPU tensor through the gloo group, no device sync."""
        if not self.info.distributed:
            return list(flags)
        both = torch.tensor(flags, dtype=torch.int32)
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.host_group)
        return [bool(v) for v in both.tolist()]

    def _last_good_note(self) -> str:
        if self.last_good is None:
            return "no checkpoint was saved before it"
        return f"last good checkpoint: {self.last_good} (iteration {self._last_good_iteration()})"

    def step(self, micro: list[dict[str, Any]]) -> None:
        """One optimizer update over ``train.accumulate`` micro-batches (the gradient of their mean loss).

        Nothing is read back from the device: the loss terms are added to the logging window and a
        non-finite total is recorded (iteration and value) on the device; both are read at the next
        print / save / validation boundary (:meth:`_raise_if_nonfinite`). Under DDP the gradients are
        all-reduced once, in the last micro-batch's backward (``no_sync`` on the others).
        """
        value_range = self.cfg["data"]["value_range"]  # losses compare network-range tensors (released codes)
        n = len(micro)
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(micro):
            lr = to_network(batch[self.input_key].to(self.device, non_blocking=True), value_range)
            hr = to_network(batch["hr"].to(self.device, non_blocking=True), value_range)
            targets = {"hr": hr, **{k: batch[k].to(self.device, non_blocking=True) for k in self.extra_targets}}
            inner = self.info.distributed and i < n - 1
            with self.ddp.no_sync() if inner else contextlib.nullcontext():
                sr = self._forward(self.ddp, lr)  # a dict of outputs for networks with auxiliary training outputs
                loss, parts = self.criterion(sr, targets)
                self.scaler.scale(loss / n if n > 1 else loss).backward()
            self._record(loss.detach(), parts, n)
        tcfg = self.cfg["train"]
        if tcfg["grad_clip"] > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), float(tcfg["grad_clip"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        self.iteration += 1
        self.batches_done += n
        if self.batches_done >= self.iters_per_epoch * n:
            self.epoch, self.batches_done = self.epoch + 1, 0

    def _record(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], n: int) -> None:
        """Add one micro-batch's [total, *terms] / n to the window; note the first non-finite total (device only)."""
        values = torch.stack([loss, *parts.values()]) / n
        self._window = values if self._window is None else self._window + values
        self._window_names = ["total", *parts]
        first = (self._bad_iter == 0) & ~torch.isfinite(loss)
        self._bad_iter = torch.where(first, self.iteration + 1, self._bad_iter)
        self._bad_loss = torch.where(first, loss.float(), self._bad_loss)
        self._epochs[self.iteration + 1] = self.epoch

    def _raise_if_nonfinite(self) -> None:
        """Stop (every rank) when any rank met a non-finite loss since the last check, naming the first
        such iteration: one small device read (and one all-reduce under DDP) per boundary, none per step."""
        first = torch.where(self._bad_iter > 0, self._bad_iter, torch.iinfo(torch.int64).max)
        if self.info.distributed:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        first_it, own_it, value = torch.stack(
            [first.double(), self._bad_iter.double(), self._bad_loss.double()]
        ).tolist()
        if first_it == float(torch.iinfo(torch.int64).max):
            self._epochs.clear()
            return
        it = int(first_it)
        what = f"non-finite loss ({value})" if int(own_it) == it else "non-finite loss (on another process)"
        raise TrainingError(
            f"{what} at iteration {it} (epoch {self._epochs.get(it, '?')}); training stopped, {self._last_good_note()}"
        )

    def _last_good_iteration(self) -> int | str:
        try:
            return load_checkpoint(self.last_good)["iteration"]
        except CheckpointError:
            return "unreadable"

    def _log_train(self, n: int, rate: float) -> None:
        """Log the mean loss terms of the last ``n`` iterations (one device read) and empty the window."""
        means = (self._window / n).tolist()
        self._window = None
        window = dict(zip([*self._window_names[1:], "total"], [*means[1:], means[0]]))
        lr = self.optimizer.param_groups[0]["lr"]
        losses = "  ".join(f"{k} {v:.5f}" for k, v in window.items())
        self.log.info(
            f"iter {self.iteration}/{self.total_iters} epoch {self.epoch}  {losses}  lr {lr:.3e}  {rate:.2f} it/s"
        )
        if self.writer is not None:
            for k, v in window.items():
                self.writer.add_scalar(f"train/loss_{k}", v, self.iteration)
            self.writer.add_scalar("train/lr", lr, self.iteration)

    def _check_ranks_agree(self) -> None:
        """Under DDP every rank must end with the same parameters (and EMA parameters); fail loudly if not.

        Buffers such as BatchNorm running statistics follow each rank's last batch (DDP broadcasts
        rank 0's at every forward); rank 0's are the ones saved.
        """
        if not self.info.distributed:
            return
        digests = [None] * self.info.world_size
        state = dict(self.net.named_parameters())
        if self.ema is not None:
            state.update({f"ema.{k}": v for k, v in self.ema.module.named_parameters()})
        dist.all_gather_object(digests, weights_digest(state))
        if len(set(digests)) != 1:
            raise TrainingError(f"ranks ended with different weights: {digests}")
        self.log.info(f"parameters identical on all {self.info.world_size} ranks: sha256 {digests[0]}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    refuse_authors_flags(argv, "train.py")
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml", help="experiment YAML (default: configs/demo.yaml)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="'auto' (default when given without a value): latest.pt of the run folder if it exists; or a checkpoint path",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a run folder that holds a run: the old run is moved to <name>.old-<timestamp>",
    )
    p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        metavar="ITER",
        help="save latest.pt and stop once this iteration is reached (for time-limited jobs); the schedule is unchanged",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = init_distributed()
    log = setup_logger(None, info.is_main)
    trainer = None
    try:
        err: Exception | None = None
        try:  # everything is checked and loaded before the run folder is touched
            cfg = load_config(args.config, args.set)
            if args.resume is not None:
                cfg["paths"]["resume"] = args.resume
            trainer = Trainer(cfg, info, stop_at=args.stop_at)
            continuing = trainer.load_start(args.resume, args.overwrite)
        except RUN_ERRORS as e:
            err = e
        if not all_ok(err is None, info):
            raise err or TrainingError("another process failed to set up the run (see its error)")
        trainer.open_run_folder(continuing, args.overwrite)
        return trainer.fit()
    except RUN_ERRORS as err:
        log.error(f"rank {info.rank}: {err}" if info.distributed else str(err))
        return 1
    except RuntimeError as err:  # a collective failed: another process died (kill -9, OOM) or lost its network
        why = peer_failure(err) if info.distributed else None
        if why is None:
            raise
        at = f" at iteration {trainer.iteration}" if trainer is not None else ""
        saved = f"; {trainer._last_good_note()}" if trainer is not None else ""
        log.error(
            f"rank {info.rank}: another process died or lost its connection{at} ({why}){saved}; "
            "continue with --resume auto"
        )
        return 1
    finally:
        if trainer is not None:
            trainer.close()
        close_logger("train")
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
