"""Exponential moving average of model weights (``train.ema`` = decay, 0 turns it off)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` after every step; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be in (0, 1) (or 0 for off), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs = [(e, p) for e, p in zip(self.module.parameters(), model.parameters())]
        self._buffers = [(e, b) for e, b in zip(self.module.buffers(), model.buffers())]

    @torch.no_grad()
    def update(self) -> None:
        ema = [e for e, p in self._pairs if e.dtype.is_floating_point]
        new = [p.detach() for e, p in self._pairs if e.dtype.is_floating_point]
        if ema:
            torch._foreach_lerp_(ema, new, 1.0 - self.decay)
        for e, b in self._buffers:
            e.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
