"""The scoring loop shared by test.py and validation during training.

A batch of network inputs in [0, 1] goes through ``predict`` (any network range, any autocast: the
caller's), is quantised to uint8 as the papers' test scripts save outputs (``truncate``, or
``round``), each prediction is handed to ``on_prediction`` (test.py saves the PNG there) and, with
ground truth, scored with the metric table's scorers (:mod:`metrics.table`) into one row per image.
The means follow ``metrics.io``'s averaging rule.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from metrics.io import summarize
from metrics.table import Scorer
from metrics.tensor import tensor_to_uint8
from utils.image_io import DataError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
Batch = tuple[Sequence[str], torch.Tensor, Sequence[np.ndarray | None]]  # names, (B, 3, H, W) input, uint8 HR


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``train.amp`` (none / bf16 / fp16) as an autocast context for ``device``."""
    return torch.autocast(device.type, dtype=AMP_DTYPES.get(amp), enabled=amp != "none")


class Evaluator:
    """Per-image rows ``{"name", <metric>: value ...}`` of the predictions of ``predict`` ([0, 1] in and out).

    ``timed``: the forward time of every batch but the first (which may build or JIT-compile kernels,
    e.g. the CPU scan's C++ build) is summed in ``forward_s``, synchronising CUDA around it.
    """

    def __init__(
        self,
        predict: Callable[[torch.Tensor], torch.Tensor],
        scorers: dict[str, Scorer],
        quantize: str = "truncate",
        on_prediction: Callable[[str, np.ndarray], None] | None = None,
        timed: bool = False,
    ) -> None:
        self.predict, self.scorers, self.quantize = predict, scorers, quantize
        self.on_prediction, self.timed = on_prediction, timed
        self.rows: list[dict[str, Any]] = []
        self.forward_s = 0.0
        self._warm = False

    @torch.no_grad()
    def add(self, names: Sequence[str], x: torch.Tensor, gts: Sequence[np.ndarray | None]) -> None:
        """One batch: predict, quantise, hand each prediction on, score the ones with ground truth."""
        sr = self._forward(x) if self.timed else self.predict(x)
        for name, pred, gt in zip(names, tensor_to_uint8(sr.float(), self.quantize), gts):
            if self.on_prediction is not None:
                self.on_prediction(name, pred)
            if gt is not None:
                self.rows.append(self.score(name, pred, gt))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._warm:  # untimed first forward
            self.predict(x)
            self._warm = True
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        sr = self.predict(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        self.forward_s += time.perf_counter() - start
        return sr

    def score(self, name: str, pred: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
        """One image's row: every scorer on the uint8 prediction against the uint8 ground truth."""
        if pred.shape != gt.shape:
            raise DataError(
                f"output for {name!r} is {pred.shape[1]}x{pred.shape[0]} but its HR is {gt.shape[1]}x{gt.shape[0]}"
            )
        return {"name": name, **{key: fn(pred, gt) for key, fn in self.scorers.items()}}

    def run(self, batches: Iterable[Batch], limit: int | None = None) -> list[dict[str, Any]]:
        """Every batch (the rows of the first ``limit`` scored images when given); returns the rows."""
        for names, x, gts in batches:
            self.add(names, x, gts)
            if limit is not None and len(self.rows) >= limit:
                del self.rows[limit:]
                break
        return self.rows

    def summary(self) -> dict[str, Any]:
        """``count``, each metric's mean and ``<metric>_excluded`` (metrics.io's averaging rule)."""
        return summarize(self.rows, list(self.scorers))
