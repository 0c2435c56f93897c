"""Learning-rate schedules (multistep, cosine, constant) with linear warm-up, by epoch or iteration.

The scheduler is stepped once per iteration. With ``unit: epoch`` the factor depends on the
number of completed epochs (``iteration // iters_per_epoch``), so ``milestones``, ``warmup``
and the cosine length are in epochs; with ``unit: iter`` they are in iterations.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from utils.registry import SCHEDULER_REGISTRY


@SCHEDULER_REGISTRY.register("multistep")
def multistep(t: int, sched: dict[str, Any], total: int, base_lr: float) -> float:
    """``gamma`` to the number of ``milestones`` passed."""
    return sched["gamma"] ** sum(t >= m for m in sched["milestones"])


@SCHEDULER_REGISTRY.register("cosine")
def cosine(t: int, sched: dict[str, Any], total: int, base_lr: float) -> float:
    """Half a cosine from 1 after the warm-up down to ``min_lr`` / base lr at ``total``."""
    warmup = sched["warmup"]
    progress = min((t - warmup) / max(total - warmup, 1), 1.0)
    floor = sched["min_lr"] / base_lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULER_REGISTRY.register("constant")
def constant(t: int, sched: dict[str, Any], total: int, base_lr: float) -> float:
    """1 after the warm-up."""
    return 1.0


def lr_factor(t: int, sched: dict[str, Any], total: int, base_lr: float) -> float:
    """Multiplier of the base learning rate after ``t`` units (epochs or iterations): the linear warm-up, then the
    ``train.scheduler.type`` schedule of ``SCHEDULER_REGISTRY``."""
    warmup = sched["warmup"]
    if t < warmup:
        return (t + 1) / warmup
    return SCHEDULER_REGISTRY.get(sched["type"], key="train.scheduler.type")(t, sched, total, base_lr)


def build_scheduler(optimizer: Optimizer, sched: dict[str, Any], iters_per_epoch: int, total_iters: int) -> LambdaLR:
    """A per-iteration ``LambdaLR`` following ``train.scheduler``."""
    if sched["type"] == "multistep" and any(not isinstance(m, int) or m < 0 for m in sched["milestones"]):
        raise ValueError(f"train.scheduler.milestones must be non-negative integers, got {sched['milestones']}")
    per_unit = iters_per_epoch if sched["unit"] == "epoch" else 1
    total = math.ceil(total_iters / per_unit)
    base_lr = optimizer.param_groups[0]["lr"]
    return LambdaLR(optimizer, lambda it: lr_factor(it // per_unit, sched, total, base_lr))
