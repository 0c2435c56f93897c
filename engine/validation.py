"""Validation during training (rank 0): the metric table's validation metrics over ``data.val`` through
test.py's scoring loop (:class:`engine.evaluator.Evaluator`), and the labelled LR | SR | HR sample grid."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from engine.evaluator import Evaluator, autocast
from metrics import table as metric_table
from metrics.tensor import tensor_to_uint8
from utils import figure
from utils.value_range import from_network, to_network

SAMPLE_IMAGES = 4


class Validation:
    """Scores and sample grids of the evaluation weights; ``input_key`` is the batch entry the network takes."""

    def __init__(
        self, cfg: dict[str, Any], dataset: Dataset | None, input_key: str, device: torch.device, amp: str
    ) -> None:
        self.cfg, self.dataset, self.input_key, self.device, self.amp = cfg, dataset, input_key, device, amp
        self.value_range = cfg["data"]["value_range"]

    def predict(self, net: nn.Module, lr: torch.Tensor) -> torch.Tensor:
        """[0, 1] LR -> [0, 1] SR (float32, not clamped), through the network's value range, under ``train.amp``."""
        with autocast(self.device, self.amp):
            out = net(to_network(lr, self.value_range))
        return from_network(out.float(), self.value_range)

    @torch.no_grad()
    def scores(self, net: nn.Module) -> dict[str, Any]:
        """``count`` and the means (metrics.io's averaging rule) of the table's validation metrics (PSNR / SSIM,
        fsr convention) over data.val (its first ``max_images``), with ``net`` in eval mode meanwhile."""
        was_training = net.training
        net.eval()
        loader = DataLoader(self.dataset, batch_size=self.cfg["train"]["batch_size"], num_workers=0)
        batches = (
            (batch["name"], batch[self.input_key].to(self.device), list(tensor_to_uint8(batch["hr"])))
            for batch in loader
        )
        evaluator = Evaluator(lambda x: self.predict(net, x), metric_table.build_scorers(metric_table.VALIDATION))
        evaluator.run(batches, limit=self.cfg["data"]["val"]["max_images"])
        net.train(was_training)
        return evaluator.summary()

    def report(self, m: dict[str, Any], iteration: int, tag: str, log: logging.Logger, writer: Any) -> None:
        """One log line (``PSNR 21.7700 dB  SSIM 0.5671``, images left out of a mean) and the TensorBoard scalars."""
        parts, notes = [], ""
        for key in metric_table.VALIDATION:
            metric = metric_table.METRICS[key]
            parts.append(f"{metric.label} {m[key]:.4f}" + (f" {metric.unit}" if metric.unit else ""))
            if m.get(f"{key}_excluded"):
                notes += f"  ({len(m[key + '_excluded'])} non-finite images left out of the {metric.label} mean)"
            if writer is not None:
                writer.add_scalar(f"val/{key}", m[key], iteration)
        log.info(
            f"validation iter {iteration} ({tag} weights, fsr convention, {m['count']} images): "
            + "  ".join(parts)
            + notes
        )

    @torch.no_grad()
    def samples(self, net: nn.Module, fallback: dict[str, Any], iteration: int, folder: Path, writer: Any) -> None:
        """Labelled LR | SR | HR grid (one row per image, tiles >= 128 px) of the first validation images
        (of ``fallback``, a training batch, without data.val) into ``folder/iter_<n>.png``."""
        batch = next(iter(DataLoader(self.dataset, batch_size=SAMPLE_IMAGES))) if self.dataset is not None else fallback
        lr = batch["lr_small"] if "lr_small" in batch else batch["lr"]
        lr, net_in, hr = lr[:SAMPLE_IMAGES], batch[self.input_key][:SAMPLE_IMAGES], batch["hr"][:SAMPLE_IMAGES]
        was_training = net.training
        net.eval()
        sr = self.predict(net, net_in.to(self.device)).clamp(0, 1).cpu()
        net.train(was_training)
        rows = [list(images) for images in zip(tensor_to_uint8(lr), tensor_to_uint8(sr), tensor_to_uint8(hr))]
        tile = min(256, max(128, 2 * hr.shape[-1]))
        fig = figure.grid(rows, ["LR", f"SR (iter {iteration})", "HR"], tile=tile)
        figure.save_figure(fig, folder / f"iter_{iteration:07d}.png")
        if writer is not None:
            writer.add_image("samples/LR_SR_HR", np.asarray(fig), iteration, dataformats="HWC")
