"""WFEN: Wavelet-based Feature Enhancement Network (Li et al., ACM MM 2024).

Read top-down next to the paper's overview figure: a U-shaped network on the 128x128 bicubic
upsampling of the 16x16 LR face. The encoder alternates Full-Domain Transformers (FDT: a local
window attention then a global channel attention, each followed by a gated feed-forward) with
Wavelet Feature Downsample (WFD: Haar DWT, the low band goes down, the summed high bands are
carried over by a small residual block). The decoder's Wavelet Feature Upgrade (WFU) fuses a
skip feature with the lower-level feature through the inverse Haar transform. Written from the
paper and the facts of the authors' released code (PRIS-CV/WFEN), whose behaviour it keeps:
attention maps are ReLU'd (not softmaxed), the Haar analysis is divided by 4 (not 2), each FDT
half returns ``ffn(norm(attn + x)) + attn`` (``x`` itself is not carried), and a shifted window
of size 1 rolls the map by one pixel without rolling it back (Python's ``-1 // 2 == -1``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from model.layout import to_nchw, to_nhwc
from model.registry import register_model


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (eps 1e-5, with bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(to_nhwc(x), x.shape[1:2], self.weight, self.bias, eps=1e-5)
        return to_nchw(y)


class GatedFeedForward(nn.Module):
    """Conv1x1 to 2 * hidden, depthwise Conv3x3, GELU(a) * b, Conv1x1 back (no biases)."""

    def __init__(self, dim: int, expansion: float = 2.66) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class _QKV(nn.Module):
    """Conv1x1 to q, k, v, then a depthwise Conv3x3 (no biases); a scalar temperature."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(1, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def qkv_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)


class LocalAttention(_QKV):
    """Window attention: per ``window`` x ``window`` window, a C x C map relu(t * q^T k) applied to v.

    q and k are L2-normalised over channels; with ``shift`` the map is rolled by
    ``-window // 2`` first and by ``window // 2`` after (the released code's arithmetic).
    """

    def __init__(self, dim: int, window: int, shift: bool) -> None:
        super().__init__(dim)
        self.window = window
        self.roll_in = -window // 2 if shift else 0
        self.roll_out = window // 2 if shift else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.window
        if self.roll_in:
            x = torch.roll(x, shifts=(self.roll_in, self.roll_in), dims=(2, 3))

        def windows(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, nW, s*s, C)
            return t.view(b, c, h // s, s, w // s, s).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, s * s, c)

        q, k, v = (windows(t) for t in self.qkv_maps(x))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = torch.relu((q.transpose(-2, -1) @ k) * self.temperature)  # (B, nW, C, C)
        out = (v @ attn).view(b, h // s, w // s, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
        if self.roll_out:
            out = torch.roll(out, shifts=(self.roll_out, self.roll_out), dims=(2, 3))
        return self.project_out(out)


class GlobalAttention(_QKV):
    """Transposed (channel) attention over the whole map, per head: relu(t * q k^T) v.

    q and k are L2-normalised over positions; the heads' channels are interleaved
    (``(head c) -> (c head)``) before the output projection, as in the released code.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in self.qkv_maps(x))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = torch.relu((q @ k.transpose(-2, -1)) * self.temperature)
        out = (attn @ v).view(b, self.heads, c // self.heads, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.project_out(out)


class AttentionHalf(nn.Module):
    """y = attn(norm1(x)); out = ffn(norm2(y + x)) + y."""

    def __init__(self, dim: int, attn: nn.Module, expansion: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = attn
        self.norm2 = LayerNorm2d(dim)
        self.ffn = GatedFeedForward(dim, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.norm1(x))
        return self.ffn(self.norm2(y + x)) + y


class FDT(nn.Module):
    """Full-Domain Transformer: a local (window) half, then a global (channel) half."""

    def __init__(self, dim: int, window: int, shift: bool, heads: int, expansion: float = 2.66) -> None:
        super().__init__()
        self.local = AttentionHalf(dim, LocalAttention(dim, window, shift), expansion)
        self.glob = AttentionHalf(dim, GlobalAttention(dim, heads), expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.glob(self.local(x))


class Haar(nn.Module):
    """Haar analysis / synthesis per channel with the released scaling (analysis / 4).

    ``forward``: (B, C, H, W) -> (B, 4C, H/2, W/2) ordered [A, H, V, D] band-major;
    ``inverse`` undoes it exactly.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        filters = torch.tensor(
            [
                [[1.0, 1.0], [1.0, 1.0]],
                [[1.0, -1.0], [1.0, -1.0]],
                [[1.0, 1.0], [-1.0, -1.0]],
                [[1.0, -1.0], [-1.0, 1.0]],
            ]
        )
        self.channels = channels
        self.register_buffer("filters", filters.unsqueeze(1).repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        out = F.conv2d(x, self.filters.to(x.dtype), stride=2, groups=c) / 4.0
        return out.view(b, c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x = x.view(b, 4, self.channels, h, w).transpose(1, 2).reshape(b, 4 * self.channels, h, w)
        return F.conv_transpose2d(x, self.filters.to(x.dtype), stride=2, groups=self.channels)


def _pointwise_block(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(), nn.Conv2d(dim, dim, 1))


class WFD(nn.Module):
    """Wavelet Feature Downsample: Conv1x1 to ``dim``, Haar; returns (A, H + V + D) at half size."""

    def __init__(self, dim_in: int, dim: int) -> None:
        super().__init__()
        self.first_conv = nn.Conv2d(dim_in, dim, 1)
        self.haar = Haar(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, h, v, d = self.haar(self.first_conv(x)).chunk(4, dim=1)
        return a, h + v + d


class WFU(nn.Module):
    """Wavelet Feature Upgrade: Haar of the skip feature; its high bands through a residual-free
    Conv3x3-ReLU-Conv3x3, its low band fused with the lower-level feature (Conv1x1-ReLU-Conv1x1 to
    three bands); the inverse Haar of [high, fused] gives the map at the skip's size."""

    def __init__(self, dim_big: int, dim_small: int) -> None:
        super().__init__()
        self.dim = dim_big
        self.haar = Haar(dim_big)
        self.high = nn.Sequential(
            nn.Conv2d(dim_big, dim_big, 3, padding=1), nn.ReLU(), nn.Conv2d(dim_big, dim_big, 3, padding=1)
        )
        both = dim_big + dim_small
        self.fuse = nn.Sequential(nn.Conv2d(both, both, 1), nn.ReLU(), nn.Conv2d(both, dim_big * 3, 1))

    def forward(self, skip: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        a, h, v, d = self.haar(skip).chunk(4, dim=1)
        fused = self.fuse(torch.cat([low, a], dim=1))
        return self.haar.inverse(torch.cat([self.high(h + v + d), fused], dim=1))


@register_model("wfen")
class WFEN(nn.Module):
    """WFEN on the bicubic-upsampled LR: (B, 3, H, W) -> (B, 3, H, W), H and W divisible by 32.

    ``init_std``: convolution weights ~ N(0, init_std), biases 0, as the released training
    initialises (its networks.init_weights); ``None`` keeps PyTorch's default initialisation.
    """

    def __init__(
        self,
        in_channels: int = 3,
        min_ch: int = 40,
        res_depth: int = 6,
        expansion: float = 2.66,
        init_std: float | None = 0.02,
    ) -> None:
        super().__init__()
        c1, c2, c3 = min_ch, min_ch * 2, min_ch * 4
        fdt = functools.partial(FDT, expansion=expansion)
        self.first_conv = nn.Conv2d(in_channels, c1, 3, padding=1)
        # encoder
        self.down1 = nn.Sequential(fdt(c1, 8, False, 4), fdt(c1, 8, False, 4))
        self.wfd1 = WFD(c1, c2)
        self.down2 = fdt(c2, 4, True, 4)
        self.high1 = _pointwise_block(c2)
        self.wfd2 = WFD(c2, c3)
        self.down3 = fdt(c3, 2, False, 8)
        self.high2 = _pointwise_block(c3)
        self.wfd3 = WFD(c3, c3)
        # bottleneck: one FDT, then res_depth - 1 with shifted / plain windows of size 1 alternating
        self.body = nn.Sequential(*[fdt(c3, 1, i > 0 and i % 2 == 1, 8) for i in range(res_depth)])
        self.high3 = _pointwise_block(c3)
        # decoder
        self.wfu1 = WFU(c3, c3)
        self.up1 = fdt(c3, 8, True, 8)
        self.wfu2 = WFU(c2, c3)
        self.up2 = fdt(c2, 4, False, 4)
        self.wfu3 = WFU(c1, c2)
        self.up3 = nn.Sequential(fdt(c1, 2, True, 4), fdt(c1, 2, False, 4))
        self.out_conv = nn.Conv2d(c1, in_channels, 3, padding=1)
        if init_std is not None:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, init_std)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(
                f"WFEN needs H and W divisible by 32 (windows of 8 at 1/4 size), got {tuple(x.shape[-2:])}"
            )
        first = self.first_conv(x)
        x1 = self.down1(first)  # 1
        a1, high1 = self.wfd1(x1)
        x2 = self.down2(a1) + self.high1(high1)  # 1/2
        a2, high2 = self.wfd2(x2)
        x3 = self.down3(a2) + self.high2(high2)  # 1/4
        a3, high3 = self.wfd3(x3)
        low = self.body(a3) + self.high3(high3)  # 1/8
        y = self.up1(self.wfu1(x3, low))  # 1/4
        y = self.up2(self.wfu2(x2, y))  # 1/2
        y = self.up3(self.wfu3(x1, y))  # 1
        return self.out_conv(y + first)
