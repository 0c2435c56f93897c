"""SFMNet: Spatial-Frequency Mutual Network for face SR (Wang et al., CVPR 2023).

Read top-down next to the paper's overview figure: two U-shaped branches on the 128x128 bicubic
upsampling of the LR face, a frequency branch of FreBlocks (convolutions on the amplitude and
phase of the feature's Fourier transform) and a spatial branch of residual groups, three
levels down (pixel-unshuffle) and up (pixel-shuffle) each. Fourteen Frequency-Spatial
Interaction Blocks (FSIB) pass the frequency branch's features into the spatial branch after
every stage. Both branches predict a residual on the upsampled input; the spatial one is the
output, the frequency one is supervised in training (``{"sr", "fre"}`` in train mode).

Written from the paper and the facts of the authors' released code (wcy-cs/SFMNet), whose
numerics it keeps (the FreBlock's ``+1e-8`` offsets, ``|irfft2|``, ``nan_to_num``; PReLU on
both tails). The released FSIB computes both cross-attentions with its frequency attention and
never calls its spatial one; ``shared_fsib_attention=True`` reproduces that (and does not build
the unused attention, 253,680 parameters that the released state dict still holds), the default
uses each branch's own attention as the paper describes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from model.registry import register_model


def conv(c_in: int, c_out: int, k: int = 3, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias)


class DownSample(nn.Module):
    """Conv3x3, pixel-unshuffle x2, Conv1x1 (4C -> C); no biases, no activation."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = conv(dim, dim)
        self.reduce = conv(dim * 4, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(F.pixel_unshuffle(self.conv(x), 2))


class UpSample(nn.Sequential):
    """Conv1x1 (C -> 4C, with bias), pixel-shuffle x2, PReLU."""

    def __init__(self, dim: int) -> None:
        super().__init__(conv(dim, dim * 4, 1, bias=True), nn.PixelShuffle(2), nn.PReLU())


class ResBlock(nn.Module):
    """relu(x + Conv3x3(relu(Conv3x3(x)))), no biases."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv(dim, dim), conv(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + x)


class ResidualGroup(nn.Module):
    """Spatial stage: ``n_blocks`` ResBlocks, Conv3x3-PReLU, plus a learnt scale times the input."""

    def __init__(self, dim: int, n_blocks: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[ResBlock(dim) for _ in range(n_blocks)], conv(dim, dim), nn.PReLU())
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip_scale * x


class FreBlock(nn.Module):
    """Frequency stage: rfft2 of Conv1x1(x); amplitude and phase each + Conv3x3-LReLU-Conv3x3 of
    itself; |irfft2| of the recombined spectrum, Conv1x1, plus x."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pre = nn.Conv2d(dim, dim, 1)
        self.amp = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(dim, dim, 3, padding=1)
        )
        self.pha = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(dim, dim, 3, padding=1)
        )
        self.post = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        real = torch.promote_types(x.dtype, torch.float32)  # no bf16 FFT: the spectrum in >= fp32
        spectrum = torch.fft.rfft2(self.pre(x).to(real) + 1e-8, norm="backward")
        amp, pha = spectrum.abs(), spectrum.angle()
        amp = (self.amp(amp.to(x.dtype)) + amp.to(x.dtype)).to(real)
        pha = (self.pha(pha.to(x.dtype)) + pha.to(x.dtype)).to(real)
        spectrum = torch.complex(amp * torch.cos(pha) + 1e-8, amp * torch.sin(pha) + 1e-8) + 1e-8
        out = torch.fft.irfft2(spectrum, s=size, norm="backward").abs().to(x.dtype)
        return torch.nan_to_num(self.post(out) + x, nan=1e-5, posinf=1e-5, neginf=1e-5)


class CrossAttention(nn.Module):
    """Channel cross-attention: queries from x, keys / values from y (Conv1x1 + depthwise Conv3x3
    each, no biases), per head softmax(t_h * q k^T) v over L2-normalised positions."""

    def __init__(self, dim: int, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.kv = nn.Conv2d(dim, dim * 2, 1, bias=False)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, 3, padding=1, groups=dim * 2, bias=False)
        self.q = nn.Conv2d(dim, dim, 1, bias=False)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k, v = self.kv_dwconv(self.kv(y)).chunk(2, dim=1)
        q = self.q_dwconv(self.q(x))
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class FSIB(nn.Module):
    """Frequency-Spatial Interaction Block: Conv3x3 on each input, two cross-attentions (each input
    attends to the other, residually), a sigmoid gate pair from both, sum of the gated features."""

    def __init__(self, dim: int, shared_attention: bool = False) -> None:
        super().__init__()
        self.fre = conv(dim, dim, bias=True)
        self.spa = conv(dim, dim, bias=True)
        self.fre_att = CrossAttention(dim)
        self.spa_att = None if shared_attention else CrossAttention(dim)  # unused in the release: not built
        self.gate = nn.Sequential(conv(2 * dim, dim, bias=True), conv(dim, 2 * dim, bias=True), nn.Sigmoid())

    def forward(self, fre_branch: torch.Tensor, spa_branch: torch.Tensor) -> torch.Tensor:
        # The released code names its inputs the other way round (spa = frequency features);
        # the convolutions and attentions keep their released names and roles.
        a, b = self.spa(fre_branch), self.fre(spa_branch)
        b = self.fre_att(b, a) + b
        a = (self.fre_att if self.spa_att is None else self.spa_att)(a, b) + a
        gate_b, gate_a = self.gate(torch.cat([b, a], dim=1)).chunk(2, dim=1)
        return torch.nan_to_num(b * gate_b + a * gate_a, nan=1e-5, posinf=1e-5, neginf=1e-5)


class Branch(nn.Module):
    """One U-shaped branch: head, 3 x (down, stage, stage), neck (2 stages), 3 x (up, stage, stage),
    tail (Conv3x3-PReLU to RGB). ``stage(dim)`` builds a FreBlock or a ResidualGroup."""

    def __init__(self, in_channels: int, dim: int, stage: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.head = nn.Sequential(conv(in_channels, dim), nn.PReLU())
        self.down = nn.ModuleList(DownSample(dim) for _ in range(3))
        self.up = nn.ModuleList(UpSample(dim) for _ in range(3))
        self.stages = nn.ModuleList(stage(dim) for _ in range(14))  # per level: main, then "mo"
        self.tail = nn.Sequential(conv(dim, in_channels), nn.PReLU())
        resize = [*self.down, nn.Identity(), *self.up]  # the neck has no resize
        # the seven (resize, stage, stage) levels in order, decided once (a plain list: views, not new modules)
        self.levels = [(resize[i], self.stages[2 * i], self.stages[2 * i + 1]) for i in range(7)]


@register_model("sfmnet")
class SFMNet(nn.Module):
    """SFMNet on the bicubic-upsampled LR: (B, 3, H, W) -> (B, 3, H, W), H and W divisible by 8.

    Train mode returns ``{"sr": spatial output, "fre": frequency output}``; eval mode the SR.
    """

    training_outputs = ("sr", "fre")

    def __init__(
        self, in_channels: int = 3, dim: int = 64, n_resblocks: int = 2, shared_fsib_attention: bool = False
    ) -> None:
        super().__init__()
        self.fre_branch = Branch(in_channels, dim, FreBlock)
        self.spa_branch = Branch(in_channels, dim, lambda d: ResidualGroup(d, n_resblocks))
        self.fsib = nn.ModuleList(FSIB(dim, shared_fsib_attention) for _ in range(14))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"SFMNet needs H and W divisible by 8, got {tuple(x.shape[-2:])}")
        # frequency branch: every stage's output is kept for the interaction blocks; from the
        # neck on, a level's second stage adds the mirrored encoder level's (U skip, head last)
        outs = [self.fre_branch.head(x)]
        fre_feats = []
        for level, (resize, main, mo) in enumerate(self.fre_branch.levels):
            a = main(resize(outs[-1]))
            b = mo(a) + outs[6 - level] if level >= 3 else mo(a)
            fre_feats += [a, b]
            outs.append(b)
        fre = self.fre_branch.tail(outs[-1]) + x
        # spatial branch: the same U, each stage's output fused with its frequency twin by an FSIB
        outs = [self.spa_branch.head(x)]
        fused = outs[0]
        for level, (resize, main, mo) in enumerate(self.spa_branch.levels):
            a = self.fsib[2 * level](fre_feats[2 * level], main(resize(fused)))
            b = mo(a) + outs[6 - level] if level >= 3 else mo(a)
            outs.append(b)
            fused = self.fsib[2 * level + 1](fre_feats[2 * level + 1], b)
        sr = self.spa_branch.tail(fused) + x
        return {"sr": sr, "fre": fre} if self.training else sr
