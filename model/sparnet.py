"""SPARNet: residual Face Attention Units with hourglass spatial attention (Chen et al., TIP 2020).

Read top-down next to the paper's Fig. 2: an encoder of down-sampling Face Attention Units
(FAUs), a body of FAUs at the smallest feature size, and a decoder of up-sampling FAUs. Each FAU
is a pre-activation residual block whose residual branch is multiplied by a spatial attention map
predicted by a small hourglass. Checked against the authors' released code (chaofengc/Face-SPARNet,
models/sparnet.py and models/blocks.py): the same layers, widths, reflect padding, BatchNorm and
LeakyReLU(0.2), nearest up-sampling, sigmoid attention and block counts, so the released weights
load (tools.convert_released). The release sets the hourglass depth from a literal 64
(log2(64 / bottleneck_size)); here it is log2(in_size / 2 / bottleneck_size), the same for its
in_size 128. ``att_3d`` is the release's "spar3d" attention (one map per channel, SPARNetLight_Attn3D).
Input: the 128x128 bicubic upsampling of the LR. Default: 10.52M parameters (Table 1: 10.6M).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.registry import register_model


class ConvLayer(nn.Module):
    """[nearest x2 up] -> reflect-padded Conv3x3 (stride 2 for 'down') -> [BN] -> [LeakyReLU 0.2]."""

    def __init__(self, c_in: int, c_out: int, scale: str = "none", norm: bool = True, act: bool = True) -> None:
        super().__init__()
        self.up = scale == "up"
        stride = 2 if scale == "down" else 1
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not norm, padding_mode="reflect")
        self.norm = nn.BatchNorm2d(c_out) if norm else nn.Identity()
        self.act = nn.LeakyReLU(0.2, inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.act(self.norm(self.conv(x)))


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
            self.skips.append(ConvLayer(c1, c_mid))
            self.downs.append(ConvLayer(c1, c_mid, "down"))
            self.ups.append(ConvLayer(c_mid, c_mid, "up"))
        self.bottom = ConvLayer(c_mid, c_mid)
        self.out = nn.Sequential(ConvLayer(c_mid, c_attn, norm=False, act=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for skip, down in zip(self.skips, self.downs):
            skips.append(skip(x))
            x = down(x)
        x = self.bottom(x)
        for up, skip in zip(reversed(self.ups), reversed(skips)):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:])
            x = skip + x
        return self.out(x)


class FaceAttentionUnit(nn.Module):
    """FAU: x' = shortcut(x) + A(r) * r, r = conv-BN-act-conv-BN(BN-act(x)), A an hourglass map."""

    def __init__(
        self, c_in: int, c_out: int, scale: str = "none", hg_depth: int = 2, att_channels: int = 1, att_3d: bool = False
    ) -> None:
        super().__init__()
        same = scale == "none" and c_in == c_out
        self.shortcut = nn.Identity() if same else ConvLayer(c_in, c_out, scale, norm=False, act=False)
        self.preact = nn.Sequential(nn.BatchNorm2d(c_in), nn.LeakyReLU(0.2, inplace=False))
        first, second = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
        self.conv1 = ConvLayer(c_in, c_out, first)
        self.conv2 = ConvLayer(c_out, c_out, second, act=False)
        att_channels = c_out if att_3d else att_channels
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
        att_3d: bool = False,
    ) -> None:
        super().__init__()
        self.in_size = in_size

        def clip(c: int) -> int:
            return max(min_ch, min(c, max_ch))

        steps = int(math.log2(in_size // min_feat_size))
        ch = clip(max_ch // (steps + 1))
        hg = int(math.log2(in_size // 2 // bottleneck_size))  # hourglass bottom at bottleneck_size
        encoder: list[nn.Module] = [ConvLayer(in_channels, ch, norm=False, act=False)]
        for _ in range(steps):
            encoder.append(
                FaceAttentionUnit(
                    clip(ch), clip(ch * 2), scale="down", hg_depth=hg, att_channels=att_channels, att_3d=att_3d
                )
            )
            ch, hg = ch * 2, hg - 1
        self.encoder = nn.Sequential(*encoder)
        hg += 1
        self.body = nn.Sequential(
            *[
                FaceAttentionUnit(
                    clip(ch), clip(ch), scale="none", hg_depth=hg, att_channels=att_channels, att_3d=att_3d
                )
                for _ in range(res_depth + 3 - steps)
            ]
        )
        decoder = []
        for _ in range(steps):
            hg += 1
            decoder.append(
                FaceAttentionUnit(
                    clip(ch), clip(ch // 2), scale="up", hg_depth=hg, att_channels=att_channels, att_3d=att_3d
                )
            )
            ch //= 2
        self.decoder = nn.Sequential(*decoder)
        self.tail = ConvLayer(clip(ch), in_channels, norm=False, act=False)
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
