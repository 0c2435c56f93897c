"""SS2D: the VMamba 2D selective scan with four cross-scan directions, shared by both models."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.layout import to_nchw, to_nhwc
from model.ssm import Scan, cross_selective_scan, fuses_cross
from model.ssm.cross import K_DIRECTIONS, cross_merge, cross_scan, direction_order

__all__ = ["SS2D", "cross_merge", "cross_scan", "init_linear_vmamba", "mamba_a_log", "mamba_dt_bias"]


def init_linear_vmamba(module: nn.Module) -> None:
    """VMamba-style init used by both papers' code, for ``net.apply``: Linear weights trunc-normal (std 0.02), bias 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def mamba_dt_bias(shape: tuple[int, ...], dt_min: float, dt_max: float, dt_floor: float) -> torch.Tensor:
    """Mamba's dt bias: dt log-uniform in [dt_min, dt_max] (at least dt_floor), stored as softplus^-1(dt)."""
    dt = torch.exp(torch.rand(shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


def mamba_a_log(rows: int, d_state: int) -> torch.Tensor:
    """Mamba's (S4D-real) A init, as log: every row is log(1 .. d_state)."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(rows, 1)


class SS2D(nn.Module):
    """2D selective scan block on (B, H, W, C) tokens (MODELS.md "Shared: SS2D").

    ``pre_conv`` runs on the x branch (B, Di, H, W) before the depthwise conv (HybriMamba's
    FWM); ``post_scan`` runs on the merged scan output (B, Di, H, W) before the LayerNorm
    (HybriMamba's symmetry enhancement). Both default to nothing. ``scan_backend`` is bound by
    ``model.build`` (None: ``auto`` for the input's device).
    """

    scan_backend: Scan | None

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 3,
        expand: float = 2.0,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        pre_conv: nn.Module | None = None,
        post_scan: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.scan_backend = None
        self.d_model = d_model
        self.d_inner = int(expand * d_model)
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        di, n, r, k = self.d_inner, d_state, self.dt_rank, K_DIRECTIONS

        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)
        self.pre_conv = pre_conv
        self.conv2d = nn.Conv2d(di, di, d_conv, padding=(d_conv - 1) // 2, groups=di, bias=True)
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, di))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, di, r))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, di))
        self.A_logs = nn.Parameter(torch.empty(k * di, n))
        self.Ds = nn.Parameter(torch.empty(k * di))
        self.post_scan = post_scan
        self.out_norm = nn.LayerNorm(di)
        self.out_proj = nn.Linear(di, d_model, bias=False)
        self._init_ssm(dt_min, dt_max, dt_init_floor)

    def _init_ssm(self, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
        """Mamba's initialisation of the scan parameters."""
        di, n = self.d_inner, self.d_state
        bound = 1.0 / math.sqrt(di)
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        nn.init.uniform_(self.dt_projs_weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        with torch.no_grad():
            self.dt_projs_bias.copy_(mamba_dt_bias((K_DIRECTIONS, di), dt_min, dt_max, dt_init_floor))
            self.A_logs.copy_(mamba_a_log(K_DIRECTIONS * di, n))
            self.Ds.fill_(1.0)
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """Selective scan of the map in its 4 cross-scan orders, merged: (B, Di, H, W) -> same."""
        batch, _, height, width = x.shape
        length = height * width
        split = [self.dt_rank, self.d_state, self.d_state]
        sequences = None
        if fuses_cross(self.scan_backend, x.device):
            # x_proj in spatial order, one batched matmul (K*c, Di) @ (B, Di, L) (the weight expanded, not copied,
            # and no transposed copies of x as a 2D @ 3D matmul makes); then only the small (B, K, c, L) x_dbl is
            # put in each direction's order (equal to projecting the cross-scanned sequences, which never exist).
            weight = self.x_proj_weight.flatten(0, 1).expand(batch, -1, -1)
            x_dbl = torch.bmm(weight, x.flatten(2)).view(batch, K_DIRECTIONS, -1, length)
            dts, Bs, Cs = (direction_order(p, height, width) for p in torch.split(x_dbl, split, dim=2))
        else:
            # composed: the scan needs the cross-scanned sequences anyway; per-direction projections as broadcast
            # matmuls (K, c, d) @ (B, K, d, L), without transposed copies of the sequences
            sequences = cross_scan(x)
            dts, Bs, Cs = torch.split(torch.matmul(self.x_proj_weight, sequences), split, dim=2)
            Bs, Cs = Bs.contiguous(), Cs.contiguous()
        dts = torch.matmul(self.dt_projs_weight, dts)
        return cross_selective_scan(
            x,
            dts.reshape(batch, -1, length),
            -torch.exp(self.A_logs.float()),
            Bs,
            Cs,
            D=self.Ds.float(),
            delta_bias=self.dt_projs_bias.float().view(-1),
            delta_softplus=True,
            backend=self.scan_backend,
            sequences=sequences,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        xz = self.in_proj(x)
        x, z = xz.chunk(2, dim=-1)
        x = to_nchw(x).contiguous()
        if self.pre_conv is not None:
            x = self.pre_conv(x)
        x = F.silu(self.conv2d(x))
        y = self.forward_core(x)
        if self.post_scan is not None:
            y = self.post_scan(y)
        y = self.out_norm(to_nhwc(y))
        return self.out_proj(y * F.silu(z))
