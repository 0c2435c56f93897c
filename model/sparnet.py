"""SPARNet-style CNN baseline: residual Face Attention Units with hourglass spatial attention.

Written from the description in Chen et al., "Learning Spatial Attention for Face
Super-Resolution" (TIP 2020): an encoder of down-sampling Face Attention Units (FAUs), a body
of FAUs at the smallest feature size, and a decoder of up-sampling FAUs. Each FAU is a
pre-activation residual block whose residual branch is multiplied by a spatial attention map
predicted by a small hourglass. This is the 10.6M-parameter class of CNN that the published
x8 tables list as SPARNet.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.registry import register_model


def conv_layer(c_in: int, c_out: int, scale: str = "none", norm: bool = True, act: bool = True) -> nn.Sequential:
    """[nearest x2 up] -> reflect-padded Conv3x3 (stride 2 for 'down') -> [BN] -> [LeakyReLU 0.2]."""
    layers: list[nn.Module] = []
    if scale == "up":
        layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
    stride = 2 if scale == "down" else 1
    layers.append(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not norm, padding_mode="reflect"))
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    if act:
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class HourglassAttention(nn.Module):
    """Spatial attention map in (0, 1) from a recursive hourglass of `depth` levels (c_mid wide)."""

    def __init__(self, c_in: int, c_attn: int, depth: int, c_mid: int = 64) -> None:
        super().__init__()
        self.depth = depth
        self.skips = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for level in range(depth):
            c1 = c_in if level == 0 else c_mid
            self.skips.append(conv_layer(c1, c_mid))
            self.downs.append(conv_layer(c1, c_mid, "down"))
            self.ups.append(conv_layer(c_mid, c_mid, "up"))
        self.bottom = conv_layer(c_mid, c_mid)
        self.out = nn.Sequential(conv_layer(c_mid, c_attn, norm=False, act=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for skip, down in zip(self.skips, self.downs):
            skips.append(skip(x))
            x = down(x)
        x = self.bottom(x)
        for up, skip in zip(reversed(self.ups), reversed(skips)):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = nn.functional.interpolate(x, size=skip.shape[-2:])
            x = skip + x
        return self.out(x)


class FaceAttentionUnit(nn.Module):
    """FAU: x' = shortcut(x) + A(r) * r, r = conv-BN-act-conv-BN(BN-act(x)), A an hourglass map."""

    def __init__(self, c_in: int, c_out: int, scale: str = "none", hg_depth: int = 2, att_channels: int = 1) -> None:
        super().__init__()
        same = scale == "none" and c_in == c_out
        self.shortcut = nn.Identity() if same else conv_layer(c_in, c_out, scale, norm=False, act=False)
        self.preact = nn.Sequential(nn.BatchNorm2d(c_in), nn.LeakyReLU(0.2, inplace=False))
        first, second = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
        self.conv1 = conv_layer(c_in, c_out, first)
        self.conv2 = conv_layer(c_out, c_out, second, act=False)
        self.attention = HourglassAttention(c_out, att_channels, hg_depth) if hg_depth > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(self.conv1(self.preact(x)))
        if self.attention is not None:
            r = r * self.attention(r)
        return self.shortcut(x) + r


@register_model("sparnet")
class SPARNet(nn.Module):
    """Encoder of down-FAUs to `min_feat_size`, `res_depth` body FAUs, decoder of up-FAUs."""

    def __init__(
        self,
        in_channels: int = 3,
        min_ch: int = 32,
        max_ch: int = 128,
        in_size: int = 128,
        min_feat_size: int = 16,
        res_depth: int = 10,
        att_channels: int = 1,
        bottleneck_size: int = 4,
    ) -> None:
        super().__init__()
        self.in_size = in_size

        def clip(c: int) -> int:
            return max(min_ch, min(c, max_ch))

        steps = int(math.log2(in_size // min_feat_size))
        ch = clip(max_ch // (steps + 1))
        hg = int(math.log2(in_size // 2 // bottleneck_size))  # hourglass bottom at bottleneck_size
        encoder: list[nn.Module] = [conv_layer(in_channels, ch, norm=False, act=False)]
        for _ in range(steps):
            encoder.append(FaceAttentionUnit(clip(ch), clip(ch * 2), "down", hg, att_channels))
            ch, hg = ch * 2, hg - 1
        self.encoder = nn.Sequential(*encoder)
        hg += 1
        self.body = nn.Sequential(
            *[FaceAttentionUnit(clip(ch), clip(ch), "none", hg, att_channels) for _ in range(res_depth + 3 - steps)]
        )
        decoder = []
        for _ in range(steps):
            hg += 1
            decoder.append(FaceAttentionUnit(clip(ch), clip(ch // 2), "up", hg, att_channels))
            ch //= 2
        self.decoder = nn.Sequential(*decoder)
        self.tail = conv_layer(clip(ch), in_channels, norm=False, act=False)
        self.min_size = 2**steps
        self.min_input = 2 * in_size // bottleneck_size  # the hourglass bottoms need at least 2x2 maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.min_size or x.shape[-2] % self.min_size:
            raise ValueError(f"SPARNet needs H and W divisible by {self.min_size}, got {tuple(x.shape[-2:])}")
        if min(x.shape[-2:]) < self.min_input:
            raise ValueError(
                f"SPARNet built for in_size {self.in_size} needs H and W >= {self.min_input} (its attention "
                f"hourglasses halve the map down to 2x2), got {tuple(x.shape[-2:])}; set model.in_size for small inputs"
            )
        return self.tail(self.decoder(self.body(self.encoder(x))))
