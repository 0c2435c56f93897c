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
    """(B, 4, C, H*W) in spatial (row-major) order -> slice k in direction k's scan order (``cross_scan``'s):
    ``direction_order(f(map))[:, k] == f(cross_scan(map)[:, k])`` for any per-position f. One ``stack`` pass, plus
    a flip for the two reversed directions; the column order is a strided view the stack reads, every slice seen
    as (W, H) so that the four have one shape."""
    batch, _, c, _ = t.shape
    rows, cols, rows_rev, cols_rev = t.unbind(1)
    cols = cols.view(batch, c, height, width).transpose(2, 3)
    cols_rev = cols_rev.view(batch, c, height, width).transpose(2, 3).flip((2, 3))
    parts = [p.reshape(batch, c, width, height) for p in (rows, cols, rows_rev.flip(-1), cols_rev)]
    return torch.stack(parts, dim=1).view(t.shape)
