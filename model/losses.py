"""Training losses (``LOSS_REGISTRY``, :mod:`utils.registry`) and their weighted sum built from ``train.losses``.

A ``train.losses`` entry may name the network ``output`` it reads (default ``sr``; networks with
auxiliary training outputs return a dict in train mode, e.g. SFMNet's ``fre``, DIC's
``sr_steps`` / ``heatmaps``) and the batch ``target`` it compares with (default ``hr``; e.g.
``heatmap`` from a landmark file). An output with one more dimension than its target is a stack
of iterations (steps first): the term is summed over the steps, as DIC's released loss is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from model.wavelet import DWT2d
from utils.registry import LOSS_REGISTRY

register_loss = LOSS_REGISTRY.register
"""Class decorator adding a loss ``forward(sr, hr) -> scalar`` under a name: ``@register_loss("l1")``."""


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


@register_loss("wavelet_l1")
class WaveletL1Loss(nn.Module):
    """L1 between the one-level DWT bands (LL, LH, HL, HH) of sr and hr, optionally band-weighted.

    Returns mean_b(w_b * mean|DWT_b(sr) - DWT_b(hr)|); with unit weights this is the mean
    absolute difference over all coefficients. The filters follow the input's device.
    """

    def __init__(self, wavelet: str = "haar", band_weights: list[float] | tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)):
        super().__init__()
        if len(band_weights) != 4 or any(float(w) < 0 for w in band_weights):
            raise ValueError(
                f"wavelet_l1.band_weights needs 4 non-negative weights for LL, LH, HL, HH, got {band_weights!r}"
            )
        self.dwt = DWT2d(wavelet)
        self.register_buffer("band_weights", torch.tensor([float(w) for w in band_weights]), persistent=False)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if self.band_weights.device != sr.device:
            self.to(sr.device)
        low, high = self.dwt(sr - hr)  # the DWT is linear: DWT(sr) - DWT(hr) = DWT(sr - hr)
        bands = torch.cat([low.abs().mean().view(1), high.abs().mean(dim=(0, 1, 3, 4))])
        return (bands * self.band_weights).mean()


@register_loss("heatmap_mse")
class HeatmapMSELoss(nn.Module):
    """Mean squared error between predicted and ground-truth landmark heatmaps (DIC's alignment loss)."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(
                f"heatmap_mse: the network predicts heatmaps of shape {tuple(pred.shape)} but the landmark data "
                f"gives {tuple(target.shape)} (points per face = model.keypoints? heatmaps at HR size / 4?)"
            )
        return (pred - target).pow(2).mean()


@register_loss("fft_amplitude_l1")
class FFTAmplitudeL1Loss(nn.Module):
    """L1 between the amplitude spectra |rfft2| (unnormalised) of sr and hr (SFMNet's AMPLoss)."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return (torch.fft.rfft2(sr).abs() - torch.fft.rfft2(hr).abs()).abs().mean()


@register_loss("fft_phase_l1")
class FFTPhaseL1Loss(nn.Module):
    """L1 between the phase spectra angle(rfft2) of sr and hr (SFMNet's PhaLoss)."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return (torch.fft.rfft2(sr).angle() - torch.fft.rfft2(hr).angle()).abs().mean()


class WeightedLoss(nn.Module):
    """Sum of weighted registered losses; returns the total and each term for logging."""

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        super().__init__()
        if not specs:
            raise ValueError("train.losses is empty; give at least one, e.g. [{type: l1, weight: 1.0}]")
        self.names: list[str] = []
        self.weights: list[float] = []
        self.reads: list[tuple[str, str]] = []  # (network output, batch target) per term
        terms = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict) or "type" not in spec:
                raise ValueError(f"train.losses[{i}] must be a mapping with a 'type', got {spec!r}")
            spec = dict(spec)
            kind = spec.pop("type")
            weight = spec.pop("weight", 1.0)
            output, target = str(spec.pop("output", "sr")), str(spec.pop("target", "hr"))
            cls = LOSS_REGISTRY.get(kind, key=f"train.losses[{i}].type")
            try:
                terms.append(cls(**spec))
            except TypeError as err:
                raise ValueError(f"train.losses[{i}] ({kind}): {err}") from None
            self.names.append(kind if (output, target) == ("sr", "hr") else f"{kind}:{output}")
            self.weights.append(float(weight))
            self.reads.append((output, target))
        self.terms = nn.ModuleList(terms)

    @property
    def outputs(self) -> set[str]:
        """The network outputs the terms read."""
        return {output for output, _ in self.reads}

    @property
    def targets(self) -> set[str]:
        """The batch entries the terms compare with."""
        return {target for _, target in self.reads}

    def forward(
        self, sr: torch.Tensor | dict[str, torch.Tensor], hr: torch.Tensor | dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``sr``: the SR or a dict of network outputs; ``hr``: the HR or a dict of batch targets. Returns the
        total and each unweighted term (detached, on the device: reading them is left to the caller)."""
        outputs = sr if isinstance(sr, dict) else {"sr": sr}
        targets = hr if isinstance(hr, dict) else {"hr": hr}
        total = outputs["sr"].new_zeros((), dtype=torch.float32)
        parts = {}
        for name, weight, term, (output, target) in zip(self.names, self.weights, self.terms, self.reads):
            pred, ref = outputs[output].float(), targets[target].float()
            if pred.dim() == ref.dim() + 1:  # iterations stacked first: summed over the steps
                value = sum(term(step, ref) for step in pred.unbind(0))
            else:
                value = term(pred, ref)
            parts[name] = value.detach()
            total = total + weight * value
        return total, parts
