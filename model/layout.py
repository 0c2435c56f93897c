"""Channels-first / channels-last views of 4-D feature maps: one plain permute each (no copy, trace-clean).

The token networks keep their features as (B, H, W, C) tokens for LayerNorm and the linear layers and
hand convolutions the (B, C, H, W) view of the same memory (``torch.channels_last``), so switching
between the two copies nothing.
"""

from __future__ import annotations

import torch


def to_nchw(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, C, H, W) view (channels-last memory, no copy)."""
    return x.permute(0, 3, 1, 2)


def to_nhwc(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W, C) view."""
    return x.permute(0, 2, 3, 1)
