"""SS2D's cross-scan (the four scan orders of a (B, D, H, W) map) and cross-merge (their sum back on the map)."""

from __future__ import annotations

import torch

K_DIRECTIONS = 4


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, and the reverse of each."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    forward = torch.stack([rows, cols], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4, D, H*W) -> (B, D, H, W): undo reversal and transpose, sum the four directions."""
    batch, _, dim, _ = y.shape
    y = y[:, :2] + y[:, 2:].flip(-1)
    rows = y[:, 0].view(batch, dim, height, width)
    cols = y[:, 1].view(batch, dim, width, height).transpose(2, 3)
    return rows + cols


def direction_order(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4, C, H*W) in spatial (row-major) order -> each direction k's slice in direction k's scan order:
    ``direction_order(t)[:, k] == cross_scan(map)[:, k]`` where ``t[:, k]`` is a per-position function of the map."""
    batch, k, c, length = t.shape
    rows = t[:, 0::2]
    cols = t[:, 1::2].view(batch, 2, c, height, width).transpose(3, 4).reshape(batch, 2, c, length)
    forward = torch.stack([rows[:, 0], cols[:, 0]], dim=1)
    backward = torch.stack([rows[:, 1], cols[:, 1]], dim=1).flip(-1)
    return torch.cat([forward, backward], dim=1)
