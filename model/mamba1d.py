"""Plain 1-D Mamba (Mamba-1) on raster-flattened image tokens: the baseline both papers argue against.

``mamba1d`` is HybriMamba's U-shape (stages, LEM, Down/Up, skips) with every MambaBlock replaced
by a standard Mamba block. The image is flattened row by row into one sequence, passed through a causal depthwise conv1d
and a single forward selective scan. causal_conv1d's CUDA kernel is used when the package
imports and the tensors are on CUDA; otherwise an equivalent PyTorch conv1d.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from model.hybrimamba import HybriMambaUNet, StageOptions
from model.registry import register_model
from model.ss2d import mamba_a_log, mamba_dt_bias
from model.ssm import Scan, selective_scan


@functools.cache
def _causal_conv1d_cuda() -> Callable | None:
    """causal_conv1d's function, or None where it does not import (tried once per process, not per call)."""
    try:
        from causal_conv1d import causal_conv1d_fn  # optional CUDA extension (requirements-cuda.txt)
    except Exception:
        return None
    return causal_conv1d_fn


def causal_conv1d_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv over (B, D, L) with weight (D, K): y_t depends on x_{t-K+1..t}; then SiLU."""
    width = weight.shape[1]
    y = F.conv1d(F.pad(x, (width - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1])
    return F.silu(y)


CONV_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def causal_conv1d_kernel_args(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Check causal_conv1d's CUDA contract (1.x ``csrc/causal_conv1d.cpp``) before its kernel asserts.

    x (batch, dim, L) and weight (dim, width) in float32, float16 or bfloat16 (they may differ),
    width 2..4, bias (dim,) in weight's dtype. x needs stride 1 along L or along dim (channel-last);
    channel-last also needs dim and the batch/L strides divisible by 8, so other layouts are copied
    to contiguous here (the wrapper copies only when neither stride is 1). Returns (x, weight, bias).
    """

    def fail(name: str, t: torch.Tensor, expected: str) -> ValueError:
        dtype = str(t.dtype).removeprefix("torch.")
        return ValueError(
            f"causal_conv1d: {name} is {dtype} {tuple(t.shape)}; causal_conv1d's CUDA kernel takes {expected}"
        )

    if x.dim() != 3:
        raise fail("x", x, "x of shape (batch, dim, L)")
    dim = x.shape[1]
    if weight.dim() != 2 or weight.shape[0] != dim or not 2 <= weight.shape[1] <= 4:
        raise fail("weight", weight, f"weight of shape (dim={dim}, width) with width 2, 3 or 4")
    for name, t in (("x", x), ("weight", weight)):
        if t.dtype not in CONV_DTYPES:
            raise fail(name, t, f"{name} in float32, float16 or bfloat16")
    if bias is not None:
        if bias.shape != (dim,) or bias.dtype != weight.dtype:
            raise fail(
                "bias", bias, f"bias of shape ({dim},) in weight's dtype {str(weight.dtype).removeprefix('torch.')}"
            )
        bias = bias.contiguous()
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"causal_conv1d: {name} is on {t.device} but x is on {x.device}")
    channel_last = x.stride(1) == 1 and x.stride(2) > 1
    if channel_last and (dim % 8 or x.stride(0) % 8 or x.stride(2) % 8) or (x.stride(1) != 1 and x.stride(2) != 1):
        x = x.contiguous()
    return x, weight, bias


def causal_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, use_cuda_kernel: bool = True
) -> torch.Tensor:
    """SiLU(causal depthwise conv1d), through causal_conv1d's kernel when available on CUDA."""
    if use_cuda_kernel and x.is_cuda and x.numel():  # an empty batch is an empty CUDA grid: the torch path
        fn = _causal_conv1d_cuda()
        if fn is not None:
            return fn(*causal_conv1d_kernel_args(x, weight, bias), activation="silu")
    return causal_conv1d_torch(x, weight, bias)


class Mamba1D(nn.Module):
    """Standard Mamba block on (B, H, W, C) tokens: one raster-order scan direction (scan bound by ``model.build``)."""

    scan_backend: Scan | None

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2.0,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.scan_backend = None
        self.d_inner = di = int(expand * d_model)
        self.d_state = d_state
        self.dt_rank = r = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(di, d_conv))
        self.conv_bias = nn.Parameter(torch.zeros(di))
        self.x_proj = nn.Linear(di, r + 2 * d_state, bias=False)
        self.dt_proj_weight = nn.Parameter(torch.empty(di, r))  # raw parameters: Linear re-inits leave them alone
        self.dt_proj_bias = nn.Parameter(torch.empty(di))
        self.A_log = nn.Parameter(mamba_a_log(di, d_state))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d_model, bias=False)
        nn.init.uniform_(self.conv_weight, -1 / math.sqrt(d_conv), 1 / math.sqrt(d_conv))
        nn.init.uniform_(self.dt_proj_weight, -(r**-0.5), r**-0.5)
        with torch.no_grad():
            self.dt_proj_bias.copy_(mamba_dt_bias((di,), dt_min, dt_max, dt_init_floor))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        batch, height, width, channels = x.shape
        xz = self.in_proj(x.reshape(batch, height * width, channels)).transpose(1, 2)  # (B, 2Di, L)
        u, z = xz.chunk(2, dim=1)
        u = causal_conv1d(u.contiguous(), self.conv_weight, self.conv_bias)
        dt, B, C = torch.split(self.x_proj(u.transpose(1, 2)), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj_weight.t()).transpose(1, 2)
        y = selective_scan(
            u,
            delta.contiguous(),
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            D=self.D.float(),
            z=z.contiguous(),
            delta_bias=self.dt_proj_bias.float(),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        return self.out_proj(y.transpose(1, 2)).view(batch, height, width, channels)


@register_model("mamba1d")
class Mamba1DUNet(HybriMambaUNet):
    """HybriMamba's U-shape with standard 1-D Mamba blocks (no FWM, one raster scan, no symmetry)."""

    def __init__(
        self,
        in_channels: int = 3,
        embed_dim: int = 32,
        depth: int = 2,
        n_layers: int = 2,
        expand: float = 2.0,
        d_state: int = 16,
        d_conv: int = 4,
        dt_rank: int | str = "auto",
        top_decoder: bool = True,
        use_lem_gate: bool = True,
    ) -> None:
        mixer = functools.partial(Mamba1D, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank)
        stage = StageOptions(depth=depth, n_layers=n_layers, use_lem_gate=use_lem_gate)
        super().__init__(mixer, stage, in_channels=in_channels, embed_dim=embed_dim, top_decoder=top_decoder)
