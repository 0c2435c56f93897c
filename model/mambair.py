"""MambaIR: a simple baseline for image restoration with state-space models (Guo et al., ECCV 2024).

Read top-down next to the paper's Fig. 2: shallow feature extraction (Conv3x3), deep feature
extraction (residual state-space groups, RSSG, each a stack of residual state-space blocks, RSSB,
and a Conv3x3 inside a residual connection; a Conv3x3 after the body, a long skip), and the
pixel-shuffle reconstruction of SwinIR. An RSSB is
``x = s * x + VSSM(LN(x))`` then ``x = s' * x + CAB(LN(x))`` with learned per-channel skip scales
s, s', where VSSM is the 2D selective scan block (in_proj, depthwise Conv3x3 + SiLU, four-direction
scan, LayerNorm, SiLU gate, out_proj: ``model.ss2d.SS2D``, so it runs on every scan backend) and CAB
is RCAN's channel attention block (Conv3x3 to C/3, GELU, Conv3x3 to C, squeeze-excitation with C/30).
Facts of the authors' code (csguoh/MambaIR, basicsr/archs/mambair_arch.py) kept here: the DIV2K mean
shift and LayerNorms of SwinIR around the body, stochastic depth on the VSSM branch only, the SS2D
expansion is the "mlp_ratio" (2), dt rank ceil(C / 16), Linear weights trunc-normal (std 0.02).

The Table 1 configuration is the classical-SR MambaIR (embed 180, 6 RSSG x 6 RSSB, d_state 16)
at x8 on the 16x16 LR: 20.71M parameters. The network takes the LR itself (``lr_input``).
"""

from __future__ import annotations

import torch
from torch import nn

from model.layout import to_nchw, to_nhwc
from model.registry import register_model
from model.ss2d import SS2D
from model.swinir import DIV2K_MEAN, PixelShuffleUpsampler, drop_path, init_transformer_weights


class ChannelAttention(nn.Module):
    """Squeeze-excitation: x * sigmoid(Conv1x1(ReLU(Conv1x1(GAP(x))))), squeezed by ``squeeze``."""

    def __init__(self, dim: int, squeeze: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, dim // squeeze, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // squeeze, dim, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block on (B, C, H, W): Conv3x3 (C -> C/3), GELU, Conv3x3 (-> C), channel attention."""

    def __init__(self, dim: int, compress: int = 3, squeeze: int = 30) -> None:
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(dim, dim // compress, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(dim // compress, dim, 3, padding=1),
            ChannelAttention(dim, squeeze),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class RSSB(nn.Module):
    """Residual state-space block on (B, H, W, C) tokens: scaled skips around VSSM and CAB."""

    def __init__(self, dim: int, d_state: int, expand: float, drop_path: float) -> None:
        super().__init__()
        self.drop_path = drop_path
        self.ln_1 = nn.LayerNorm(dim)
        self.vssm = SS2D(dim, d_state=d_state, expand=expand)
        self.skip_scale = nn.Parameter(torch.ones(dim))
        self.ln_2 = nn.LayerNorm(dim)
        self.cab = CAB(dim)
        self.skip_scale2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.skip_scale + drop_path(self.vssm(self.ln_1(x)), self.drop_path, self.training)
        cab = to_nhwc(self.cab(to_nchw(self.ln_2(x))))
        return x * self.skip_scale2 + cab


class RSSG(nn.Module):
    """Residual state-space group: x + Conv3x3(RSSB_L(... RSSB_1(x)))."""

    def __init__(self, dim: int, d_state: int, expand: float, drop_paths: list[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(RSSB(dim, d_state, expand, p) for p in drop_paths)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> same."""
        y = x
        for block in self.blocks:
            y = block(y)
        return x + to_nhwc(self.conv(to_nchw(y)))


@register_model("mambair")
class MambaIR(nn.Module):
    """Shallow conv, RSSGs with a long skip, pixel-shuffle reconstruction; 16x16 LR in, 128x128 out at x8."""

    lr_input = True  # takes the LR itself (the pipeline's lr_small), not its bicubic upsampling

    def __init__(
        self,
        in_channels: int = 3,
        scale: int = 8,
        embed_dim: int = 180,
        depths: tuple[int, ...] | list[int] = (6, 6, 6, 6, 6, 6),
        d_state: int = 16,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale, self.img_range = scale, img_range
        mean = DIV2K_MEAN if in_channels == 3 else (0.0,) * in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(in_channels, embed_dim, 3, padding=1)
        self.patch_norm = nn.LayerNorm(embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            RSSG(embed_dim, d_state, mlp_ratio, rates[s : s + d]) for d, s in zip(depths, starts)
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
        """(B, 3, h, w) LR -> (B, 3, scale h, scale w)."""
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"MambaIR expects (B, {self.mean.shape[1]}, H, W), got {tuple(x.shape)}")
        x = (x - self.mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        return self.reconstruction(x) / self.img_range + self.mean
