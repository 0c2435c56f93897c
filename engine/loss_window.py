"""The training loss terms and the non-finite check, kept on the device between reads.

Each micro-batch adds its ``[total, *terms] / n`` to a device-side window and notes the first
iteration whose total is not finite (iteration and value) with ``torch.where``: nothing is read
back per step. :meth:`LossWindow.raise_if_nonfinite` (one small read, one all-reduce under DDP)
and :meth:`LossWindow.report` (one read) run only at print / save / validation boundaries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from utils.dist import DistInfo

NO_BAD = torch.iinfo(torch.int64).max


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, bad set-up); the message says why and where."""


class LossWindow:
    """Summed loss terms since the last report and the first non-finite iteration since the last check."""

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self._sum: torch.Tensor | None = None
        self._names: list[str] = []
        self._bad_iter = torch.zeros((), dtype=torch.int64, device=info.device)  # first non-finite iteration
        self._bad_loss = torch.zeros((), device=info.device)  # its loss
        self._epochs: dict[int, int] = {}  # epoch of each iteration since the last check

    def record(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], n: int, iteration: int, epoch: int) -> None:
        """Add one micro-batch's [total, *terms] / n of ``iteration`` (1-based); note a non-finite total (device only)."""
        values = torch.stack([loss, *parts.values()]) / n
        self._sum = values if self._sum is None else self._sum + values
        self._names = ["total", *parts]
        first = (self._bad_iter == 0) & ~torch.isfinite(loss)
        self._bad_iter = torch.where(first, iteration, self._bad_iter)
        self._bad_loss = torch.where(first, loss.float(), self._bad_loss)
        self._epochs[iteration] = epoch

    def raise_if_nonfinite(self, last_good_note: Callable[[], str]) -> None:
        """Stop (every rank) when any rank met a non-finite loss since the last check, naming the first
        such iteration: one small device read (and one all-reduce under DDP) per boundary, none per step."""
        first = torch.where(self._bad_iter > 0, self._bad_iter, NO_BAD)
        if self.info.distributed:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        first_it, own_it, value = torch.stack(
            [first.double(), self._bad_iter.double(), self._bad_loss.double()]
        ).tolist()
        if first_it == float(NO_BAD):
            self._epochs.clear()
            return
        it = int(first_it)
        what = f"non-finite loss ({value})" if int(own_it) == it else "non-finite loss (on another process)"
        raise TrainingError(
            f"{what} at iteration {it} (epoch {self._epochs.get(it, '?')}); training stopped, {last_good_note()}"
        )

    def report(self, n: int, rate: float, progress: str, lr: float, log: logging.Logger, writer: Any, it: int) -> None:
        """Log the mean loss terms of the last ``n`` iterations (one device read) and empty the window."""
        means = (self._sum / n).tolist()
        self._sum = None
        window = dict(zip([*self._names[1:], "total"], [*means[1:], means[0]]))
        losses = "  ".join(f"{k} {v:.5f}" for k, v in window.items())
        log.info(f"{progress}  {losses}  lr {lr:.3e}  {rate:.2f} it/s")
        if writer is not None:
            for k, v in window.items():
                writer.add_scalar(f"train/loss_{k}", v, it)
            writer.add_scalar("train/lr", lr, it)
