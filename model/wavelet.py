"""One-level 2D discrete wavelet transform and its inverse (pytorch_wavelets), size-preserving."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from utils.precision import autocast_off

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # pytorch_wavelets imports pkg_resources
    from pytorch_wavelets import DWTForward, DWTInverse


class DWT2d(nn.Module):
    """(B, C, H, W) -> LL (B, C, H/2, W/2) and highs (B, C, 3, H/2, W/2) in order LH, HL, HH.

    The bands equal ``pywt.dwt2(x, wavelet, mode="periodization")`` = (cA, (cH, cV, cD)):
    LL = cA; LH = cH (high-pass along H, low-pass along W: horizontal edges); HL = cV
    (low-pass along H, high-pass along W: vertical edges); HH = cD (diagonal).
    ``mode="periodization"`` makes every band exactly half size for any wavelet length, so
    the inverse returns exactly (H, W). H and W must be even. Computed in the filters' dtype
    with autocast off, returned in the input's dtype.
    """

    def __init__(self, wavelet: str = "haar") -> None:
        super().__init__()
        self.wavelet = wavelet
        self.dwt = DWTForward(J=1, wave=wavelet, mode="periodization")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"DWT2d needs even H and W, got {tuple(x.shape[-2:])}")
        filt = self.dwt.h0_col.dtype
        with autocast_off(x.device.type):  # pytorch_wavelets' backward is not autocast-safe
            low, highs = self.dwt(x.to(filt))
        return low.to(x.dtype), highs[0].to(x.dtype)


class IDWT2d(nn.Module):
    """Inverse of ``DWT2d``: LL (B, C, h, w) and highs (B, C, 3, h, w) -> (B, C, 2h, 2w)."""

    def __init__(self, wavelet: str = "haar") -> None:
        super().__init__()
        self.wavelet = wavelet
        self.idwt = DWTInverse(wave=wavelet, mode="periodization")

    def forward(self, low: torch.Tensor, highs: torch.Tensor) -> torch.Tensor:
        filt = self.idwt.g0_col.dtype
        with autocast_off(low.device.type):  # pytorch_wavelets' backward is not autocast-safe
            return self.idwt((low.to(filt), [highs.to(filt)])).to(low.dtype)
