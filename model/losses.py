"""Training losses: a small registry and a weighted sum built from ``train.losses``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

LOSS_REGISTRY: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a loss ``forward(sr, hr) -> scalar`` to the registry."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        LOSS_REGISTRY[name] = cls
        return cls

    return wrap


@register_loss("l1")
class L1Loss(nn.Module):
    """Mean absolute error."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return (sr - hr).abs().mean()


@register_loss("charbonnier")
class CharbonnierLoss(nn.Module):
    """mean(sqrt((sr - hr)^2 + eps^2)), a smooth L1."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((sr - hr).pow(2) + self.eps**2).mean()


class WeightedLoss(nn.Module):
    """Sum of weighted registered losses; returns the total and each term for logging."""

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        super().__init__()
        if not specs:
            raise ValueError("train.losses is empty; give at least one, e.g. [{type: l1, weight: 1.0}]")
        self.names: list[str] = []
        self.weights: list[float] = []
        terms = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict) or "type" not in spec:
                raise ValueError(f"train.losses[{i}] must be a mapping with a 'type', got {spec!r}")
            spec = dict(spec)
            kind = spec.pop("type")
            weight = spec.pop("weight", 1.0)
            if kind not in LOSS_REGISTRY:
                raise ValueError(
                    f"train.losses[{i}].type: unknown loss {kind!r}; registered: {', '.join(sorted(LOSS_REGISTRY))}"
                )
            try:
                terms.append(LOSS_REGISTRY[kind](**spec))
            except TypeError as err:
                raise ValueError(f"train.losses[{i}] ({kind}): {err}") from None
            self.names.append(kind)
            self.weights.append(float(weight))
        self.terms = nn.ModuleList(terms)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        total = sr.new_zeros((), dtype=torch.float32)
        parts = {}
        for name, weight, term in zip(self.names, self.weights, self.terms):
            value = term(sr.float(), hr.float())
            parts[name] = float(value.detach())
            total = total + weight * value
        return total, parts
