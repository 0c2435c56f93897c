"""Pixel value range the network sees: ``data.value_range`` [0, 1] (ours) or [-1, 1] (the released codes).

Datasets, metrics and saved images stay in [0, 1]; these functions convert at the network's
input and output. Under [-1, 1] the training losses compare network-range tensors, as the released
training code does (its L1 on [-1, 1] values is exactly twice the L1 on [0, 1] values).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

VALUE_RANGES = ([0, 1], [-1, 1])


def _check(value_range: Sequence[float]) -> bool:
    """True for [-1, 1], False for [0, 1]; anything else is an error naming the config key."""
    if list(value_range) not in VALUE_RANGES:
        raise ValueError(f"data.value_range must be [0, 1] or [-1, 1], got {value_range!r}")
    return list(value_range) == [-1, 1]


def to_network(x: torch.Tensor, value_range: Sequence[float]) -> torch.Tensor:
    """[0, 1] images -> the network's range."""
    return x * 2 - 1 if _check(value_range) else x


def from_network(y: torch.Tensor, value_range: Sequence[float]) -> torch.Tensor:
    """Network-range output -> [0, 1] (not clamped)."""
    return (y + 1) / 2 if _check(value_range) else y


def predict_unit(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, value_range: Sequence[float]
) -> torch.Tensor:
    """Run ``net`` on [0, 1] input ``x`` in its configured range and return the output in [0, 1]."""
    return from_network(net(to_network(x, value_range)), value_range)
