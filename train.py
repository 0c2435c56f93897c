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

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import model.ssm
from data import build_dataset
from engine.evaluator import autocast
from engine.loss_window import LossWindow, TrainingError
from engine.validation import Validation
from model.build import build_network, compile_network
from model.losses import WeightedLoss
from model.registry import check_training_io
from utils.authors import refuse_authors_flags
from utils.checkpoint import CheckpointError
from utils.cli import ArgumentParser, os_error_message
from utils.config import ConfigError, load_config, save_config
from utils.dist import DistInfo, all_ok, cleanup, init_distributed, peer_failure
from utils.ema import ModelEMA
from utils.grad_checkpoint import enable_grad_checkpoint
from utils.image_io import DataError
from utils.logger import close_logger, open_log_file, setup_logger
from utils.resume import Checkpoints
from utils.run_folder import RunFolderError, RunLock, claim
from utils.sampler import ResumableSampler
from utils.scheduler import build_scheduler
from utils.seed import ItemSeeded, preserved_rng, seed_everything
from utils.value_range import to_network

NO_DECAY_NAMES = ("A_log", "A_logs", "D", "Ds")
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


def build_net(cfg: dict[str, Any], info: DistInfo) -> tuple[nn.Module, str, int]:
    """(network with its scan backend bound, backend name, checkpointed blocks): the same initial weights on every
    rank, then per-rank random streams (dropout ...)."""
    try:
        scan = model.ssm.resolve_backend(cfg["ssm"]["backend"], info.device, cfg["ssm"]["deterministic"])
    except (ValueError, RuntimeError) as err:
        raise ConfigError(str(err)) from None
    seed_everything(cfg["seed"])
    try:
        net = build_network(cfg, info.device, scan=scan)
    except (ValueError, TypeError, RuntimeError) as err:  # e.g. model.embed_dim=0 rejected by torch
        raise ConfigError(f"config key 'model' {cfg['model']} does not build a network: {err}") from None
    try:
        blocks = enable_grad_checkpoint(net, cfg["train"]["grad_checkpoint"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    seed_everything(cfg["seed"] + info.rank)
    return net, scan.name, blocks


def build_loader(dataset: Any, cfg: dict[str, Any], info: DistInfo) -> tuple[ResumableSampler, DataLoader]:
    """The resumable sampler (this rank's share, any position of any epoch) and the training DataLoader."""
    data, bs = cfg["data"]["train"], cfg["train"]["batch_size"]
    sampler = ResumableSampler(dataset, bs, info.world_size, info.rank, cfg["seed"])
    loader = DataLoader(
        ItemSeeded(dataset, cfg["seed"]),
        batch_size=bs,
        sampler=sampler,
        num_workers=data["num_workers"],
        drop_last=True,
        pin_memory=info.device.type == "cuda",
        persistent_workers=data["num_workers"] > 0,
        generator=torch.Generator(),
    )
    return sampler, loader


def check_losses_fit(t: Trainer) -> None:
    """The losses' outputs/targets against the network and the training data (DIC's landmarks)."""
    marks = getattr(t.train_set, "landmarks", None)
    data_targets, points = ({"heatmap"}, marks.n_points) if marks is not None else (set(), None)
    try:
        check_training_io(t.net, t.model_name, t.criterion.outputs, t.criterion.targets, data_targets, points)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_lr_folders(t: Trainer) -> None:
    """Networks that take the HR/scale LR refuse LR folders of upsampled images."""
    for key, dataset in (("train", t.train_set), ("val", t.val_set)):
        if t.input_key == "lr_small" and getattr(dataset, "upsampled", False):
            raise ConfigError(
                f"model {t.model_name!r} takes the HR/{t.cfg['scale']} LR, but data.{key}.lr_dir "
                "holds upsampled LR images; point it at the small LR or use type hr_folder"
            )


def claim_run_folder(t: Trainer, continuing: bool, overwrite: bool) -> None:
    """Rank 0: lock, refuse or move aside an old run, config.yaml, train.log, tb/. Every rank fails together."""
    err: Exception | None = None
    if t.info.is_main:
        notes: list[str] = []
        try:
            t.lock = claim(t.run_dir, continuing, overwrite, notes)
            for sub in ("checkpoints", "samples"):
                (t.run_dir / sub).mkdir(exist_ok=True)
            save_config(t.cfg, t.run_dir / "config.yaml")
            open_log_file(t.log, t.run_dir / "train.log")
            for note in notes:
                t.log.warning(note)
            if t.cfg["logging"]["tensorboard"]:
                from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard loads only when used

                t.writer = SummaryWriter(str(t.run_dir / "tb"))
        except RunFolderError as e:
            err = e
        except OSError as e:
            err = RunFolderError(f"cannot set up run folder {t.run_dir}: {os_error_message(e)}")
    if not all_ok(err is None, t.info):
        raise err or RunFolderError(f"rank 0 could not set up run folder {t.run_dir} (see its error)")


def start_line(t: Trainer) -> str:
    """The run's one-line description at the start of fit."""
    tcfg, bs, ws, n = t.cfg["train"], t.cfg["train"]["batch_size"], t.info.world_size, t.accumulate
    n_params = sum(p.numel() for p in t.net.parameters())
    return (
        f"model {t.model_name} ({n_params / 1e6:.3f}M parameters) on {t.device}, ssm backend "
        f"{t.scan_backend} (ssm.backend {t.cfg['ssm']['backend']}); world size {ws}, batch size {bs} per process, effective batch size {bs * ws * n}"
        + (f" ({n} accumulated micro-batches per iteration)" if n > 1 else "")
        + "; "
        f"{len(t.train_set)} training images, {t.iters_per_epoch} iterations per epoch, "
        f"{t.total_iters} iterations; amp {t.amp}, ema {tcfg['ema']}, compile {tcfg['compile']}, "
        f"grad_checkpoint {tcfg['grad_checkpoint']}"
        + (f" ({t.checkpointed_blocks} blocks)" if t.checkpointed_blocks else "")
        + f"; run folder {t.run_dir}"
    )


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor of a state_dict (names, dtypes and bytes), for cross-rank checks."""
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_ranks_agree(t: Trainer) -> None:
    """Under DDP every rank must end with the same parameters (and EMA parameters); fail loudly if not.

    Buffers such as BatchNorm running statistics follow each rank's last batch (DDP broadcasts
    rank 0's at every forward); rank 0's are the ones saved.
    """
    if not t.info.distributed:
        return
    digests = [None] * t.info.world_size
    state = dict(t.net.named_parameters())
    if t.ema is not None:
        state.update({f"ema.{k}": v for k, v in t.ema.module.named_parameters()})
    dist.all_gather_object(digests, weights_digest(state))
    if len(set(digests)) != 1:
        raise TrainingError(f"ranks ended with different weights: {digests}")
    t.log.info(f"parameters identical on all {t.info.world_size} ranks: sha256 {digests[0]}")


def any_rank(flags: list[bool], info: DistInfo, group: Any) -> list[bool]:
    """Each flag OR-ed over the ranks: a CPU tensor through the gloo group, no device sync."""
    if not info.distributed:
        return list(flags)
    both = torch.tensor(flags, dtype=torch.int32)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    return [bool(v) for v in both.tolist()]


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
    """Build, fit and step of one training run (checkpoints: utils.resume; validation: engine.validation).

    Construction and :meth:`load_start` only check and build (nothing is written);
    :meth:`open_run_folder` then claims the run folder, and :meth:`fit` trains.
    """

    def __init__(self, cfg: dict[str, Any], info: DistInfo, stop_at: int | None = None) -> None:
        self.cfg, self.info, self.stop_at, self.device = cfg, info, stop_at, info.device
        tcfg = cfg["train"]
        if (tcfg["iterations"] is None) == (tcfg["epochs"] is None):
            raise ConfigError(
                "set exactly one of train.iterations and train.epochs "
                f"(got iterations={tcfg['iterations']}, epochs={tcfg['epochs']})"
            )
        self.run_dir = Path(cfg["paths"]["experiments_root"]) / cfg["name"]
        self.log = logging.getLogger("train")
        self.checkpoints = Checkpoints(self.run_dir, info, self.log)
        self.lock: RunLock | None = None
        self.writer = None
        self.net, self.scan_backend, self.checkpointed_blocks = build_net(cfg, info)
        self.model_name = cfg["model"]["name"]
        self.ddp: nn.Module = self.net  # wrapped in DistributedDataParallel by open_run_folder
        self.input_key = "lr_small" if getattr(self.net, "lr_input", False) else "lr"  # LR-in nets: SwinIR, MambaIR
        self.ema = ModelEMA(self.net, float(tcfg["ema"])) if tcfg["ema"] else None
        compile_network(self.net, tcfg["compile"])  # in place: checkpoints keep the uncompiled keys
        try:
            self.criterion = WeightedLoss(tcfg["losses"])
        except ValueError as err:  # a bad train.losses entry: a config error, named by the loss module
            raise ConfigError(str(err)) from err
        self.extra_targets = sorted(self.criterion.targets - {"hr"})  # e.g. DIC's landmark heatmaps
        self.optimizer = build_optimizer(self.net, tcfg["optimizer"])
        self.amp, self.accumulate = tcfg["amp"], tcfg["accumulate"]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")

        check_batch_fits(tcfg["batch_size"], cfg["data"]["train"]["hr_size"])
        self.train_set = build_dataset(cfg["data"]["train"], cfg["scale"], train=True)
        self.sampler, self.loader = build_loader(self.train_set, cfg, info)
        self.iters_per_epoch = self.sampler.batches_per_epoch // self.accumulate  # optimizer updates
        if self.iters_per_epoch == 0:
            raise TrainingError(
                f"training set has {len(self.train_set)} images: fewer than train.batch_size={tcfg['batch_size']} "
                f"x train.accumulate={self.accumulate} x {info.world_size} process(es); "
                "lower train.batch_size or train.accumulate, or add data"
            )
        iters, epochs = tcfg["iterations"], tcfg["epochs"]
        self.total_iters = iters if iters is not None else epochs * self.iters_per_epoch
        try:
            self.scheduler = build_scheduler(self.optimizer, tcfg["scheduler"], self.iters_per_epoch, self.total_iters)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        check_losses_fit(self)
        self.val_set = build_dataset(cfg["data"]["val"], cfg["scale"], train=False)  # None for type none
        check_lr_folders(self)
        self.validation = Validation(cfg, self.val_set, self.input_key, self.device, self.amp)
        self.losses = LossWindow(info)  # read only at print / save / validation boundaries: no host sync per step
        self.iteration = self.epoch = self.batches_done = 0
        self.best_psnr: float | None = None
        self.host_group = None  # gloo group for per-iteration host flags under DDP (made in fit)

    def load_start(self, arg: str | None, overwrite: bool) -> bool:
        """The checkpoint to start from, loaded (nothing written); whether this run continues its run folder."""
        return self.checkpoints.load_start(self, arg, overwrite)

    def open_run_folder(self, continuing: bool, overwrite: bool) -> None:
        """Claim the run folder (rank 0), then wrap the network for DDP."""
        claim_run_folder(self, continuing, overwrite)
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

    def save(self, names: list[str]) -> None:
        """Write a checkpoint under each name; weights trained on a non-finite loss stop the run instead."""
        self.losses.raise_if_nonfinite(self.checkpoints.last_good_note)
        self.checkpoints.save(self, names)

    def evaluate(self) -> None:
        """Validation of the evaluation weights (EMA when on) on rank 0, RNG untouched; best.pt when PSNR improves."""
        improved = False
        if self.info.is_main:
            net = self.ema.module if self.ema is not None else self.net
            with preserved_rng():
                m = self.validation.scores(net)
            self.validation.report(m, self.iteration, "EMA" if self.ema is not None else "model", self.log, self.writer)
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
    def fit(self, stop: StopRequest | None = None) -> int:
        """Train to ``total_iters`` (or ``--stop-at`` / a signal: save and stop); ``stop`` is the caller's
        SIGTERM / SIGINT handler (main keeps it until the run's last line is logged), else fit's own."""
        if self.iteration >= self.total_iters:
            self.log.info(
                f"already trained {self.iteration} of {self.total_iters} iterations; nothing to do "
                "(raise train.iterations to go on, or --overwrite without --resume to start again)"
            )
            return 0
        lcfg = self.cfg["logging"]
        self.log.info(start_line(self))
        own_stop, stop = stop is None, stop or StopRequest()
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
                self.loader.generator.manual_seed(self.cfg["seed"] * 1_000_003 + self.epoch)
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
                        self.losses.raise_if_nonfinite(self.checkpoints.last_good_note)
                    if log_now:
                        rate = window_n / (time.perf_counter() - window_t)
                        progress = f"iter {it}/{self.total_iters} epoch {self.epoch}"
                        lr = self.optimizer.param_groups[0]["lr"]
                        self.losses.report(window_n, rate, progress, lr, self.log, self.writer, it)
                        window_n, window_t = 0, time.perf_counter()
                    if val_now:
                        self.evaluate()
                    if sample_now and self.info.is_main:
                        with preserved_rng():
                            net = self.ema.module if self.ema is not None else self.net
                            self.validation.samples(net, micro[-1], it, self.run_dir / "samples", self.writer)
                    if save_now:
                        self.save(["latest.pt"] + ([f"iter_{it}.pt"] if lcfg["keep_iter_checkpoints"] else []))
                    if stopping:
                        if not save_now:
                            self.save(["latest.pt"])
                        why = stop.signal_name or f"--stop-at {self.stop_at}"
                        self.log.info(
                            f"stopped by {why} at iteration {it}; continue with --resume auto "
                            f"(checkpoint {self.checkpoints.dir / 'latest.pt'})"
                        )
                        return 0
                    if it >= self.total_iters:
                        break
            if self.val_set is not None and self.iteration % lcfg["val_every"]:
                self.evaluate()
            if self.iteration % lcfg["save_every"]:
                self.save(["latest.pt"])
            check_ranks_agree(self)
            self.log.info(f"finished {self.iteration} iterations; best PSNR {self.best_psnr}")
            return 0
        except OSError as err:  # disk full / unwritable while writing samples, TensorBoard, ...
            raise TrainingError(
                f"{os_error_message(err)} at iteration {self.iteration}; {self.checkpoints.last_good_note()}"
            ) from None
        finally:
            bar.close()
            if own_stop:
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
        bad, stop_now = any_rank([err is not None, stop.signal_name is not None], self.info, self.host_group)
        if not bad:
            return [*micro, stop_now]
        why = data_error_message(err) if err is not None else "another process met an unreadable training image"
        try:
            self.save(["latest.pt"])
            saved = f"saved {self.checkpoints.dir / 'latest.pt'} at iteration {self.iteration} first"
        except CheckpointError as save_err:
            saved = f"could not save latest.pt ({save_err}); {self.checkpoints.last_good_note()}"
        raise TrainingError(f"{why}; {saved}; fix or remove the file, then continue with --resume auto")

    def step(self, micro: list[dict[str, Any]]) -> None:
        """One optimizer update over ``train.accumulate`` micro-batches (the gradient of their mean loss).

        Nothing is read back from the device: the loss terms go to the loss window, which also notes a
        non-finite total on the device; both are read at the next print / save / validation boundary.
        Under DDP the gradients are all-reduced once, in the last micro-batch's backward (``no_sync``
        on the others).
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
                with autocast(self.device, self.amp):
                    sr = self.ddp(lr)  # a dict of outputs for networks with auxiliary training outputs
                loss, parts = self.criterion(sr, targets)
                self.scaler.scale(loss / n if n > 1 else loss).backward()
            self.losses.record(loss.detach(), parts, n, self.iteration + 1, self.epoch)
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
    trainer, stop = None, None
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
        stop = StopRequest()  # a SIGTERM from torchrun after a peer died must not cut the error line below
        return trainer.fit(stop)
    except RUN_ERRORS as err:
        log.error(f"rank {info.rank}: {err}" if info.distributed else str(err))
        return 1
    except RuntimeError as err:  # a collective failed: another process died (kill -9, OOM) or lost its network
        why = peer_failure(err) if info.distributed else None
        if why is None:
            raise
        at = f" at iteration {trainer.iteration}" if trainer is not None else ""
        saved = f"; {trainer.checkpoints.last_good_note()}" if trainer is not None else ""
        log.error(
            f"rank {info.rank}: another process died or lost its connection{at} ({why}){saved}; "
            "continue with --resume auto"
        )
        return 1
    finally:
        if stop is not None:
            stop.restore()
        if trainer is not None:
            trainer.close()
        close_logger("train")
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
