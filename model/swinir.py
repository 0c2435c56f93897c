"""SwinIR: image restoration with residual Swin Transformer blocks (Liang et al., ICCVW 2021).

Read top-down next to the paper's Fig. 2: shallow feature extraction (one Conv3x3), deep feature
extraction (K residual Swin Transformer blocks, RSTB, each L Swin Transformer layers, STL, and a
Conv3x3 inside a residual connection; a Conv3x3 after the body, a long skip), and the HQ image
reconstruction module (Conv3x3-LeakyReLU, then log2(scale) x [Conv3x3 to 4C, PixelShuffle x2],
then Conv3x3 to RGB). Facts of the authors' code (JingyunLiang/SwinIR, models/network_swinir.py)
kept here: the DIV2K mean is subtracted from the input and added back to the output, LayerNorms
after the patch embedding and after the body, window attention with a learned relative position
bias table, shifted windows (shift = window / 2) in every second layer with the -100 mask, and
no shift when the feature map is not larger than the window.

The Table 1 configuration is the classical-SR SwinIR (embed 180, 6 RSTB x 6 STL, 6 heads,
window 8, MLP ratio 2, pixel-shuffle upsampler) at x8 on the 16x16 LR: 11.90M parameters.
The network takes the LR itself (``lr_input``), not its bicubic upsampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.layout import to_nchw, to_nhwc
from model.registry import register_model

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
MASK_VALUE = -100.0  # the authors' attention mask between pixels of different shifted regions


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w * w, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """(B * H/w * W/w, w * w, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c).transpose(2, 3)
    return x.reshape(-1, height, width, c)


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index into the (2w-1)^2 bias table of every query-key offset in a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask: 0 within a region of the rolled map, -100 across regions."""
    regions = torch.zeros(1, height, width, 1)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, (hs, ws) in enumerate((hs, ws) for hs in bounds for ws in bounds):
        regions[:, hs, ws, :] = i
    ids = window_partition(regions, window).squeeze(-1)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


class WindowAttention(nn.Module):
    """(S)W-MSA: multi-head self-attention within w x w windows, with relative position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window, self.heads = window, heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B*nW, N, C) windows, ``mask`` (nW, N, N) or None -> (B*nW, N, C)."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:  # (B, nW, heads, N, d) against a (nW, heads, N, N) bias: broadcast, not copied
            windows = mask.shape[0]
            bias = bias + mask.unsqueeze(1)
            q, k, v = (t.view(bw // windows, windows, *t.shape[1:]) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.reshape(bw, self.heads, n, c // self.heads).transpose(1, 2).reshape(bw, n, c))


class SwinTransformerLayer(nn.Module):
    """STL: x + (S)W-MSA(LN(x)), then x + MLP(LN(x)); the window is shifted by ``shift`` when > 0."""

    def __init__(
        self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float, resolution: int
    ) -> None:
        super().__init__()
        if resolution <= window:  # the authors' rule: one window over the whole map, no shift
            window, shift = resolution, 0
        self.window, self.shift, self.drop_path = window, shift, drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        mask = shifted_window_mask(resolution, resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)
        self.resolution = resolution

    def _mask(self, height: int, width: int) -> torch.Tensor | None:
        if not self.shift:
            return None
        if (height, width) == (self.resolution, self.resolution):
            return self.attn_mask
        return shifted_window_mask(height, width, self.window, self.shift).to(self.attn_mask.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> same."""
        _, height, width, c = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), self._mask(height, width))
        y = window_reverse(y, self.window, height, width)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + drop_path(y, self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class RSTB(nn.Module):
    """Residual Swin Transformer block: x + Conv3x3(STL_L(... STL_1(x)))."""

    def __init__(
        self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, drop_paths: list[float], resolution: int
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SwinTransformerLayer(
                dim,
                heads=heads,
                window=window,
                shift=0 if i % 2 == 0 else window // 2,
                mlp_ratio=mlp_ratio,
                drop_path=p,
                resolution=resolution,
            )
            for i, p in enumerate(drop_paths)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> same."""
        y = x
        for layer in self.layers:
            y = layer(y)
        return x + to_nhwc(self.conv(to_nchw(y)))


class PixelShuffleUpsampler(nn.Sequential):
    """HQ image reconstruction: Conv3x3-LeakyReLU to ``feat``, log2(scale) x [Conv3x3 to 4 feat, PixelShuffle 2], Conv3x3."""

    def __init__(self, dim: int, scale: int, out_channels: int, feat: int = 64) -> None:
        if scale & (scale - 1):
            raise ValueError(f"the pixel-shuffle upsampler supports scales 2^n, got {scale}")
        self.scale = scale
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            ups += [nn.Conv2d(feat, 4 * feat, 3, padding=1), nn.PixelShuffle(2)]
        super().__init__(
            nn.Sequential(nn.Conv2d(dim, feat, 3, padding=1), nn.LeakyReLU(inplace=True)),  # default slope 0.01
            nn.Sequential(*ups),
            nn.Conv2d(feat, out_channels, 3, padding=1),
        )


def init_transformer_weights(module: nn.Module) -> None:
    """The authors' init, for ``net.apply``: Linear trunc-normal (std 0.02) with zero bias, LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@register_model("swinir")
class SwinIR(nn.Module):
    """Shallow conv, RSTBs with a long skip, pixel-shuffle reconstruction; 16x16 LR in, 128x128 out at x8."""

    lr_input = True  # takes the LR itself (the pipeline's lr_small), not its bicubic upsampling

    def __init__(
        self,
        in_channels: int = 3,
        scale: int = 8,
        img_size: int = 16,
        embed_dim: int = 180,
        depths: tuple[int, ...] | list[int] = (6, 6, 6, 6, 6, 6),
        num_heads: tuple[int, ...] | list[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        self.scale, self.window_size, self.img_range = scale, window_size, img_range
        mean = DIV2K_MEAN if in_channels == 3 else (0.0,) * in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(in_channels, embed_dim, 3, padding=1)
        self.patch_norm = nn.LayerNorm(embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            RSTB(
                embed_dim,
                depth=d,
                heads=h,
                window=window_size,
                mlp_ratio=mlp_ratio,
                drop_paths=rates[s : s + d],
                resolution=img_size,
            )
            for d, h, s in zip(depths, num_heads, starts)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.reconstruction = PixelShuffleUpsampler(embed_dim, scale, in_channels)
        self.apply(init_transformer_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep feature extraction on (B, C, H, W) -> same."""
        y = self.patch_norm(to_nhwc(x))
        for layer in self.layers:
            y = layer(y)
        return to_nchw(self.norm(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) LR -> (B, 3, scale h, scale w); h, w padded (reflect) to the window and cropped back."""
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.window_size, -width % self.window_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        x = (x - self.mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.reconstruction(x) / self.img_range + self.mean
        return x[..., : height * self.scale, : width * self.scale]
