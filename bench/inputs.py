"""Random selective-scan inputs shared by the benchmarks (bench.scan, bench.gpu)."""

from __future__ import annotations

import torch


def scan_inputs(
    batch: int, d: int, n: int, length: int, groups: int, dtype: torch.dtype, device: torch.device, with_z: bool
) -> dict[str, torch.Tensor | None]:
    """SS2D-like inputs: u, delta, B, C, z in ``dtype``; A, D, delta_bias float32; softplus(delta + bias) small."""
    g = torch.Generator().manual_seed(0)
    t = {
        "u": torch.randn(batch, d, length, generator=g),
        "delta": 0.5 * torch.randn(batch, d, length, generator=g) - 1.0,
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1) * (0.5 + torch.rand(d, 1, generator=g)),
        "B": torch.randn(batch, groups, n, length, generator=g),
        "C": torch.randn(batch, groups, n, length, generator=g),
        "D": torch.randn(d, generator=g),
        "z": torch.randn(batch, d, length, generator=g) if with_z else None,
        "delta_bias": 0.1 * torch.randn(d, generator=g),
    }
    low = ("u", "delta", "B", "C", "z")
    return {
        k: (v.to(device, dtype if k in low else torch.float32).requires_grad_() if v is not None else None)
        for k, v in t.items()
    }
