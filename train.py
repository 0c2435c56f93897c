"""Train a face super-resolution network from one YAML experiment file.

    python train.py --config configs/demo.yaml [--set train.batch_size=8 ...] [--resume [auto|PATH]]
    torchrun --nproc_per_node 4 train.py --config ...      (DistributedDataParallel, one GPU per process)

Rank 0 writes ``experiments/<name>/``: config.yaml, train.log, tb/, checkpoints/ (latest.pt,
iter_<n>.pt, best.pt), samples/. ``--resume auto`` continues from latest.pt of the run folder
exactly where it stopped (same weights as an uninterrupted run on CPU). SIGTERM / SIGINT save
latest.pt at the next iteration boundary and exit with status 0; a non-finite loss stops the
run naming the iteration and the last good checkpoint.
"""

from __future__ import annotations

import argparse
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
from metrics.io import finite_mean
from metrics.psnr_ssim import calculate_psnr, calculate_ssim, tensor_to_uint8
from model.losses import WeightedLoss
from model.registry import build_model
from utils import figure
from utils.checkpoint import CheckpointError, check_model_name, load_checkpoint, save_checkpoint
from utils.config import ConfigError, load_config, save_config
from utils.dist import DistInfo, any_rank, barrier, cleanup, init_distributed
from utils.ema import ModelEMA
from utils.logger import setup_logger
from utils.sampler import ResumableSampler
from utils.scheduler import build_scheduler
from utils.seed import ItemSeeded, preserved_rng, rng_state, seed_everything, set_rng_state

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NO_DECAY_NAMES = ("A_log", "A_logs", "D", "Ds")
SAMPLE_IMAGES = 4


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, bad set-up); the message says why and where."""


def param_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights only: biases, norms, SSM ``A_log``/``D`` and ``_no_weight_decay`` params are exempt."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim <= 1 or getattr(p, "_no_weight_decay", False) or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(net: nn.Module, opt: dict[str, Any]) -> torch.optim.Optimizer:
    betas = tuple(opt["betas"])
    if len(betas) != 2:
        raise ConfigError(f"config key 'train.optimizer.betas' needs two numbers, got {opt['betas']!r}")
    cls = torch.optim.AdamW if opt["type"] == "adamw" else torch.optim.Adam
    return cls(param_groups(net, float(opt["weight_decay"])), lr=float(opt["lr"]), betas=betas)


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
    """Holds the network, optimisation state and run folder of one training run."""

    def __init__(self, cfg: dict[str, Any], info: DistInfo, stop_at: int | None = None) -> None:
        self.cfg, self.info, self.stop_at = cfg, info, stop_at
        self.device = info.device
        tcfg, lcfg = cfg["train"], cfg["logging"]
        if (tcfg["iterations"] is None) == (tcfg["epochs"] is None):
            raise ConfigError(
                "set exactly one of train.iterations and train.epochs "
                f"(got iterations={tcfg['iterations']}, epochs={tcfg['epochs']})"
            )
        self.run_dir = Path(cfg["paths"]["experiments_root"]) / cfg["name"]
        self.ckpt_dir = self.run_dir / "checkpoints"
        if info.is_main:
            for sub in ("checkpoints", "samples"):
                (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        barrier(info)
        self.log = setup_logger(self.run_dir / "train.log", info.is_main)
        model.ssm.set_default_backend(cfg["ssm"]["backend"])

        seed_everything(cfg["seed"])  # the same initial weights on every rank
        self.net = build_model(cfg["model"]).to(self.device)
        seed_everything(cfg["seed"] + info.rank)  # then per-rank streams (dropout ...)
        self.model_name = cfg["model"]["name"]
        self.ddp: nn.Module = self.net
        if info.distributed:
            self.ddp = DistributedDataParallel(
                self.net, device_ids=[self.device] if self.device.type == "cuda" else None
            )
        self.ema = ModelEMA(self.net, float(tcfg["ema"])) if tcfg["ema"] else None
        try:
            self.criterion = WeightedLoss(tcfg["losses"])
        except ValueError as err:  # a bad train.losses entry: a config error, named by the loss module
            raise ConfigError(str(err)) from err
        self.optimizer = build_optimizer(self.net, tcfg["optimizer"])
        self.amp = tcfg["amp"]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")

        self.train_set = build_dataset(cfg["data"]["train"], cfg["scale"], train=True)
        bs = tcfg["batch_size"]
        self.sampler = ResumableSampler(self.train_set, bs, info.world_size, info.rank, cfg["seed"])
        self.iters_per_epoch = self.sampler.batches_per_epoch
        if self.iters_per_epoch == 0:
            raise TrainingError(
                f"training set has {len(self.train_set)} images: fewer than train.batch_size={bs} "
                f"x {info.world_size} process(es); lower train.batch_size or add data"
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
        self.scheduler = build_scheduler(self.optimizer, tcfg["scheduler"], self.iters_per_epoch, self.total_iters)

        val_cfg = cfg["data"]["val"]
        self.val_set = build_dataset(val_cfg, cfg["scale"], train=False)  # None for type none
        self.iteration = self.epoch = self.batches_done = 0
        self.best_psnr: float | None = None
        self.last_good: Path | None = None
        self.writer = None
        if info.is_main and lcfg["tensorboard"]:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))

    def _total_iterations(self, tcfg: dict[str, Any]) -> int:
        iters, epochs = tcfg["iterations"], tcfg["epochs"]
        total = iters if iters is not None else epochs * self.iters_per_epoch
        if total <= 0:
            raise ConfigError(f"train.iterations / train.epochs must be positive, got {iters or epochs}")
        return total

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
        state = self.state()
        if self.info.is_main:
            for name in names:
                save_checkpoint(state, self.ckpt_dir / name)
            self.last_good = self.ckpt_dir / names[0]
            self.log.info(f"saved {', '.join(names)} at iteration {self.iteration}")
        barrier(self.info)

    def resume(self, path: Path) -> None:
        state = load_checkpoint(path, map_location="cpu")
        check_model_name(state, self.model_name, path)
        try:
            self.net.load_state_dict(state["model"])
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint {path} does not fit model {self.model_name} as configured (different model.* "
                f"settings?): {str(err).splitlines()[0]}"
            ) from err
        if self.ema is not None:
            if state["ema"] is None:
                self.log.warning(f"{path} has no EMA weights; EMA restarts from the current weights")
                self.ema.module.load_state_dict(state["model"])
            else:
                self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.best_psnr = state["iteration"], state["best_psnr"]
        loader = state["rng"]["loader"]
        self.epoch, self.batches_done = loader["epoch"], loader["batches_done"]
        ranks = state["rng"]["ranks"]
        if len(ranks) == self.info.world_size and self.batches_done <= self.iters_per_epoch:
            set_rng_state(ranks[self.info.rank])
        else:
            self.log.warning(
                f"{path} was written by {len(ranks)} process(es), this run has {self.info.world_size}: "
                "random states and the data position are re-derived, so the run is not bit-identical"
            )
            seed_everything(self.cfg["seed"] + self.info.rank + 1_000_003 * self.iteration)
            self.epoch, self.batches_done = (
                self.iteration // self.iters_per_epoch,
                self.iteration % self.iters_per_epoch,
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
        with torch.autocast(self.device.type, dtype=AMP_DTYPES.get(self.amp), enabled=self.amp != "none"):
            return net(lr)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR / SSIM (fsr convention) of the evaluation weights (EMA when on) over data.val."""
        net = self._eval_net()
        was_training = net.training
        net.eval()
        loader = DataLoader(self.val_set, batch_size=self.cfg["train"]["batch_size"], num_workers=0)
        psnrs, ssims = [], []
        max_images = self.cfg["data"]["val"]["max_images"]
        for batch in loader:
            sr = self._forward(net, batch["lr"].to(self.device)).float()
            for pred, gt in zip(tensor_to_uint8(sr), tensor_to_uint8(batch["hr"])):
                psnrs.append(calculate_psnr(pred, gt, convention="fsr"))
                ssims.append(calculate_ssim(pred, gt, convention="fsr"))
            if max_images is not None and len(psnrs) >= max_images:
                psnrs, ssims = psnrs[:max_images], ssims[:max_images]
                break
        net.train(was_training)
        psnr, n_inf = finite_mean(psnrs)
        return {"psnr": psnr, "ssim": float(sum(ssims) / max(len(ssims), 1)), "images": len(psnrs), "psnr_inf": n_inf}

    @torch.no_grad()
    def save_samples(self, fallback: dict[str, Any]) -> None:
        """Labelled LR | SR | HR grid (one row per image, tiles >= 128 px) of the first validation images."""
        batch = next(iter(DataLoader(self.val_set, batch_size=SAMPLE_IMAGES))) if self.val_set is not None else fallback
        lr = batch["lr_small"] if "lr_small" in batch else batch["lr"]
        lr, lr_up, hr = lr[:SAMPLE_IMAGES], batch["lr"][:SAMPLE_IMAGES], batch["hr"][:SAMPLE_IMAGES]
        net = self._eval_net()
        was_training = net.training
        net.eval()
        sr = self._forward(net, lr_up.to(self.device)).float().cpu()
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
                f"validation iter {self.iteration} ({tag} weights, fsr convention, {m['images']} images): "
                f"PSNR {m['psnr']:.4f} dB  SSIM {m['ssim']:.4f}"
                + (f"  ({m['psnr_inf']} identical images left out of the PSNR mean)" if m["psnr_inf"] else "")
            )
            if self.writer is not None:
                self.writer.add_scalar("val/psnr", m["psnr"], self.iteration)
                self.writer.add_scalar("val/ssim", m["ssim"], self.iteration)
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
    def fit(self, resume: Path | None = None) -> int:
        if resume is not None:
            self.resume(resume)
        elif self.cfg["paths"]["resume"] == "auto":
            self.log.info(f"--resume auto: no checkpoint in {self.ckpt_dir}, starting from scratch")
        if self.iteration >= self.total_iters:
            self.log.info(f"already trained {self.iteration} of {self.total_iters} iterations; nothing to do")
            return 0
        tcfg, lcfg = self.cfg["train"], self.cfg["logging"]
        bs, ws = tcfg["batch_size"], self.info.world_size
        n_params = sum(p.numel() for p in self.net.parameters())
        self.log.info(
            f"model {self.model_name} ({n_params / 1e6:.3f}M parameters) on {self.device}, ssm backend "
            f"{self.cfg['ssm']['backend']}; world size {ws}, batch size {bs} per process, effective batch size {bs * ws}; "
            f"{len(self.train_set)} training images, {self.iters_per_epoch} iterations per epoch, "
            f"{self.total_iters} iterations; amp {self.amp}, ema {tcfg['ema']}; run folder {self.run_dir}"
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
        window: dict[str, float] = {}
        window_n, window_t = 0, time.perf_counter()
        try:
            while self.iteration < self.total_iters:
                self.sampler.set_position(self.epoch, self.batches_done)
                self.loader_gen.manual_seed(self.cfg["seed"] * 1_000_003 + self.epoch)
                for batch in self.loader:
                    parts, stop_now = self.step(batch, stop)
                    bar.update(1)
                    for k, v in parts.items():
                        window[k] = window.get(k, 0.0) + v
                    window_n += 1
                    it = self.iteration
                    if it % lcfg["print_every"] == 0 or it == self.total_iters:
                        rate = window_n / (time.perf_counter() - window_t)
                        self._log_train(window, window_n, rate)
                        window, window_n, window_t = {}, 0, time.perf_counter()
                    if self.val_set is not None and it % lcfg["val_every"] == 0:
                        self.evaluate()
                    if self.info.is_main and it % lcfg["sample_every"] == 0:
                        with preserved_rng():
                            self.save_samples(batch)
                    if it % lcfg["save_every"] == 0:
                        self.save(["latest.pt"] + ([f"iter_{it}.pt"] if lcfg["keep_iter_checkpoints"] else []))
                    if stop_now or (self.stop_at is not None and it >= self.stop_at):
                        if it % lcfg["save_every"]:
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
        finally:
            bar.close()
            stop.restore()
            if self.writer is not None:
                self.writer.close()

    def step(self, batch: dict[str, Any], stop: StopRequest) -> tuple[dict[str, float], bool]:
        """One optimisation step; returns the loss terms and whether every rank must stop now."""
        tcfg = self.cfg["train"]
        lr = batch["lr"].to(self.device, non_blocking=True)
        hr = batch["hr"].to(self.device, non_blocking=True)
        sr = self._forward(self.ddp, lr)
        loss, parts = self.criterion(sr, hr)
        flags = torch.stack(
            [
                (~torch.isfinite(loss.detach())).int(),
                torch.tensor(stop.signal_name is not None, device=self.device).int(),
            ]
        )
        nonfinite, stop_now = any_rank(flags, self.info).tolist()
        if nonfinite:
            last = (
                f"last good checkpoint: {self.last_good} (iteration {self._last_good_iteration()})"
                if self.last_good is not None
                else "no checkpoint was saved before it"
            )
            raise TrainingError(
                f"non-finite loss ({float(loss.detach())}) at iteration {self.iteration + 1} (epoch {self.epoch}); "
                f"training stopped, {last}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if tcfg["grad_clip"] > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), float(tcfg["grad_clip"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        self.iteration += 1
        self.batches_done += 1
        if self.batches_done == self.iters_per_epoch:
            self.epoch, self.batches_done = self.epoch + 1, 0
        parts["total"] = float(loss.detach())
        return parts, bool(stop_now)

    def _last_good_iteration(self) -> int | str:
        try:
            return load_checkpoint(self.last_good)["iteration"]
        except CheckpointError:
            return "unreadable"

    def _log_train(self, window: dict[str, float], n: int, rate: float) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        losses = "  ".join(f"{k} {v / n:.5f}" for k, v in window.items())
        self.log.info(
            f"iter {self.iteration}/{self.total_iters} epoch {self.epoch}  {losses}  lr {lr:.3e}  {rate:.2f} it/s"
        )
        if self.writer is not None:
            for k, v in window.items():
                self.writer.add_scalar(f"train/loss_{k}", v / n, self.iteration)
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
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        "--stop-at",
        type=int,
        default=None,
        metavar="ITER",
        help="save latest.pt and stop once this iteration is reached (for time-limited jobs); the schedule is unchanged",
    )
    return p.parse_args(argv)


def resume_path(cfg: dict[str, Any], arg: str | None) -> Path | None:
    """--resume (or paths.resume): 'auto' -> the run's latest.pt when present, else a path that must exist."""
    choice = arg if arg is not None else cfg["paths"]["resume"]
    if choice is None:
        return None
    if choice == "auto":
        latest = Path(cfg["paths"]["experiments_root"]) / cfg["name"] / "checkpoints" / "latest.pt"
        return latest if latest.is_file() else None
    path = Path(choice)
    if not path.is_file():
        raise CheckpointError(f"--resume {choice}: checkpoint file does not exist")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = init_distributed()
    try:
        cfg = load_config(args.config, args.set)
        if args.resume is not None:
            cfg["paths"]["resume"] = args.resume
        trainer = Trainer(cfg, info, stop_at=args.stop_at)
        return trainer.fit(resume_path(cfg, args.resume))
    except (ConfigError, CheckpointError, TrainingError, DataError) as err:
        log = logging.getLogger("train")
        if not log.handlers:
            log = setup_logger(None, info.is_main)
        log.error(f"rank {info.rank}: {err}" if info.distributed else str(err))
        return 1
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
