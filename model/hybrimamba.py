"""HybriMamba: Mamba face super-resolution with Image-SSM, FWM and LEM (MODELS.md "HybriMamba").

Read top-down next to the figures in ``shared/seeds``: ``hybrimamba_mambablock_fwm_imagessm.png``
(FWM, symmetry enhancement, MambaBlock), ``hybrimamba_lem.png`` (LEM) and
``hybrimamba_architecture.png`` (stages, U-shape). Between stages the features are tokens
(B, H, W, C); the convolutions see them as (B, C, H, W) channels-last views, so the stream is
not copied back and forth. Where the authors' released code differs from the figure, a
constructor switch selects it; the defaults follow the figure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.layout import to_nchw, to_nhwc
from model.registry import register_model
from model.ss2d import SS2D, init_linear_vmamba
from model.wavelet import DWT2d, IDWT2d
from utils.precision import autocast_off


def polar(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z.abs(), z.angle())`` computed from one real view of ``z``, values and gradients alike (0 at z = 0):
    inductor lowers these real operations, while autograd's sum of the two complex gradients of ``abs`` and
    ``angle`` fails to compile on channels-last layouts."""
    re, im = torch.view_as_real(z).unbind(-1)
    r2 = re * re + im * im
    nonzero = r2 > 0
    amplitude = torch.where(nonzero, torch.sqrt(torch.where(nonzero, r2, 1.0)), 0.0)
    phase = torch.where(nonzero, torch.atan2(im, torch.where(nonzero, re, 1.0)), 0.0)
    return amplitude, phase


class FWM(nn.Module):
    """Fourier-Wavelet Transform Module on (B, C, H, W): x + Fourier(x) + Wavelet(x)."""

    def __init__(self, dim: int, extra_residual: bool = False) -> None:
        super().__init__()
        self.magnitude = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(), nn.Conv2d(dim, dim, 1))
        self.dwt = DWT2d("haar")
        self.idwt = IDWT2d("haar")
        self.high_conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.extra_residual = extra_residual

    def fourier(self, x: torch.Tensor) -> torch.Tensor:
        """Modulate the rfft2 magnitude with Conv1x1-GELU-Conv1x1, keep the phase, invert."""
        real = torch.promote_types(x.dtype, torch.float32)  # cuFFT has no bf16: FFT in >= fp32
        spectrum = torch.fft.rfft2(x.to(real), norm="ortho")
        amplitude, phase = polar(spectrum)
        magnitude = self.magnitude(amplitude.to(x.dtype)).to(real)  # may be negative, as in the paper
        spectrum = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        out = torch.fft.irfft2(spectrum, s=x.shape[-2:], norm="ortho")
        return out.to(x.dtype)

    def wavelet(self, x: torch.Tensor) -> torch.Tensor:
        """One-level Haar DWT; the same Conv3x3 on LH, HL and HH; LL unchanged; inverse DWT.

        An odd H or W (e.g. 20 / 4 = 5 at the lowest level) is padded by edge replication
        and cropped back.
        """
        height, width = x.shape[-2:]
        if height % 2 or width % 2:
            x = F.pad(x, (0, width % 2, 0, height % 2), mode="replicate")
        real = torch.promote_types(x.dtype, torch.float32)
        with autocast_off(x.device.type):  # pytorch_wavelets' backward breaks under autocast
            low, highs = self.dwt(x.to(real))
        batch, channels, bands, h, w = highs.shape  # the shared Conv3x3 on each band: bands folded into batch
        highs = self.high_conv(highs.transpose(1, 2).reshape(batch * bands, channels, h, w))
        highs = highs.view(batch, bands, channels, h, w).transpose(1, 2)
        with autocast_off(x.device.type):
            out = self.idwt(low, highs.to(real))
        return out[..., :height, :width].to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.fourier(x) + self.wavelet(x)
        return out + x if self.extra_residual else out  # authors' code adds x once more


class SymmetryEnhancement(nn.Module):
    """Image-SSM symmetry enhancement of the merged scan y: y + g * ((1 - a) y + a (y + flip_W y) / 2)."""

    def __init__(self, gain: float = 0.2, init: float = 0.3) -> None:
        super().__init__()
        self.gain = gain
        self.weight = nn.Parameter(torch.tensor(float(init)))  # a = sigmoid(weight)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.weight).to(y.dtype)
        symmetric = 0.5 * (y + y.flip(-1))
        return y + self.gain * ((1 - a) * y + a * symmetric)


class MambaBlock(SS2D):
    """Figure (a): SS2D with FWM on the x branch and Image-SSM (4-way scan + symmetry enhancement)."""

    def __init__(
        self,
        dim: int,
        expand: float = 1.5,
        d_state: int = 8,
        d_conv: int = 3,
        dt_rank: int | str = "auto",
        use_fwm: bool = True,
        fwm_extra_residual: bool = False,
        use_symmetry: bool = True,
        sym_gain: float = 0.2,
        sym_init: float = 0.3,
    ) -> None:
        d_inner = int(expand * dim)
        super().__init__(
            dim,
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            dt_rank=dt_rank,
            pre_conv=FWM(d_inner, fwm_extra_residual) if use_fwm else None,
            post_scan=SymmetryEnhancement(sym_gain, sym_init) if use_symmetry else None,
        )


Mixer = Callable[[int], nn.Module]
"""Builds the token mixer of a Mamba stack for a width: (B, H, W, d) -> (B, H, W, d)."""


class MambaStack(nn.Module):
    """``n_layers`` residual mixers, each x + mixer(RMSNorm(x)), on (B, H, W, d); mixer = MambaBlock."""

    def __init__(self, dim: int, n_layers: int, mixer: Mixer) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.RMSNorm(dim, eps=1e-5) for _ in range(n_layers))
        self.blocks = nn.ModuleList(mixer(dim) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, block in zip(self.norms, self.blocks):
            x = x + block(norm(x))
        return x


class ChannelAttention(nn.Module):
    """Channel attention: x * sigmoid(Conv1x1(ReLU(Conv1x1(GAP(x))))), squeeze d -> d/reduction."""

    def __init__(self, dim: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.squeeze = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.squeeze(x)


class LEM(nn.Module):
    """Local Enhancement Module on (B, H, W, d): Conv1x1(Cr * Wg), Cr channel attention, Wg pixel-wise gate.

    ``gate_released_view=True`` reshapes the gate's (B, L, d) token output with ``.view(B, d, H, W)``
    as one version of the authors' released code does (pixels and channels scrambled) instead of
    permuting it.
    """

    def __init__(
        self,
        dim: int,
        gate_ratio: int = 2,
        reduction: int = 16,
        use_gate: bool = True,
        gate_released_view: bool = False,
    ) -> None:
        super().__init__()
        self.gate_released_view = gate_released_view
        self.expand = nn.Conv2d(dim, 2 * dim if use_gate else dim, 1)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.attention = ChannelAttention(dim, reduction)
        self.gate = (
            nn.Sequential(
                nn.LayerNorm(dim),
                nn.Linear(dim, gate_ratio * dim),
                nn.GELU(),
                nn.Linear(gate_ratio * dim, dim),
            )
            if use_gate
            else None
        )
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.expand(to_nchw(x))
        if self.gate is None:  # ablation: no pixel-wise gate, out = Conv1x1(Cr)
            return to_nhwc(self.proj(self.attention(self.dwconv(f))))
        f1, f2 = f.chunk(2, dim=1)
        cr = self.attention(self.dwconv(f1))
        wg = self.gate(to_nhwc(f2))  # (B, H, W, d) = the released (B, L, d) tokens
        wg = wg.contiguous().view(f2.shape) if self.gate_released_view else to_nchw(wg)
        return to_nhwc(self.proj(cr * wg))


@dataclass(frozen=True)
class StageOptions:
    """How every HybriMamba stage is built (the same for all seven), named as ``HybriMamba``'s keyword
    arguments: ``depth`` x (a MambaStack of ``n_layers`` mixers, a LEM), the LEM gate's switches."""

    depth: int = 2
    n_layers: int = 2
    use_lem_gate: bool = True
    lem_gate_released_view: bool = False


class HybriMambaStage(nn.Module):
    """ "HybriMamba Blocks" (figure (b)): depth x [x + MambaStack(LN(x)); x + LEM(LN(x))] on (B, H, W, d)."""

    def __init__(self, dim: int, mixer: Mixer, options: StageOptions) -> None:
        super().__init__()
        depth = options.depth
        self.mamba_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.mambas = nn.ModuleList(MambaStack(dim, options.n_layers, mixer) for _ in range(depth))
        self.lem_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.lems = nn.ModuleList(
            LEM(dim, use_gate=options.use_lem_gate, gate_released_view=options.lem_gate_released_view)
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for mamba_norm, mamba, lem_norm, lem in zip(self.mamba_norms, self.mambas, self.lem_norms, self.lems):
            x = x + mamba(mamba_norm(x))
            x = x + lem(lem_norm(x))
        return x


class Downsample(nn.Module):
    """Halve H and W on (B, H, W, c_in) tokens: depthwise Conv4x4 stride 2 + pointwise Conv1x1 (no bias)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 4, stride=2, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_nhwc(self.pointwise(self.depthwise(to_nchw(x))))


class Upsample(nn.Module):
    """Double H and W on (B, H, W, c_in) tokens: depthwise Conv3x3 + Conv1x1 to 4*c_out + PixelShuffle(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, 4 * out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_nhwc(F.pixel_shuffle(self.pointwise(self.depthwise(to_nchw(x))), 2))


class HybriMambaUNet(nn.Module):
    """Figure (a)'s 3-level U-shape of HybriMamba stages with skips and a global residual, any mixer.

    ``top_decoder=False`` skips the H x W decoder stage (the authors' released code).
    """

    checkpoint_blocks = (MambaStack, LEM)  # recomputed in the backward with train.grad_checkpoint=blocks

    def __init__(
        self,
        mixer: Mixer,
        options: StageOptions,
        in_channels: int = 3,
        embed_dim: int = 32,
        top_decoder: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        c = embed_dim
        stage = functools.partial(HybriMambaStage, mixer=mixer, options=options)
        self.head = nn.Conv2d(in_channels, c, 3, padding=1)
        self.encoder0 = stage(c)
        self.down0 = Downsample(c, 2 * c)
        self.encoder1 = stage(2 * c)
        self.down1 = Downsample(2 * c, 4 * c)
        self.encoder2 = stage(4 * c)
        self.transformation = stage(4 * c)
        self.decoder1 = stage(8 * c)
        self.up1 = Upsample(8 * c, 2 * c)
        self.decoder2 = stage(4 * c)
        self.up2 = Upsample(4 * c, c)
        self.decoder3 = stage(2 * c) if top_decoder else None
        self.tail = nn.Conv2d(2 * c, in_channels, 3, padding=1)
        self.apply(init_linear_vmamba)  # the authors' initialisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) bicubic-upsampled LR, H and W divisible by 4 -> SR of the same shape."""
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{name} expects (B, {self.in_channels}, H, W) input, got {tuple(x.shape)}")
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f"{name} needs H and W divisible by 4 (two 2x downsamplings), got {tuple(x.shape[-2:])}")
        feat = F.leaky_relu(self.head(x.contiguous(memory_format=torch.channels_last)))
        e0 = self.encoder0(to_nhwc(feat))
        e1 = self.encoder1(self.down0(e0))
        e2 = self.encoder2(self.down1(e1))
        d = self.decoder1(torch.cat([self.transformation(e2), e2], dim=-1))
        d = self.decoder2(torch.cat([self.up1(d), e1], dim=-1))
        d = torch.cat([self.up2(d), e0], dim=-1)
        if self.decoder3 is not None:
            d = self.decoder3(d)
        return x + F.leaky_relu(self.tail(to_nchw(d)))  # x first: the sum keeps x's layout


@register_model("hybrimamba")
class HybriMamba(HybriMambaUNet):
    """HybriMamba (figure (a)): the U-shape with MambaBlocks (FWM + Image-SSM) as mixers.

    Switches for the authors' released code: ``top_decoder=False`` skips the H x W decoder stage,
    ``fwm_extra_residual=True`` adds x once more after the FWM, ``lem_gate_released_view=True``
    reshapes the LEM gate's tokens with ``.view`` instead of a permute. ``sym_gain`` is g in y + g * S(y)
    (0.2 in the authors' code). Ablations: ``use_fwm``, ``use_symmetry``, ``use_lem_gate``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        embed_dim: int = 32,
        depth: int = 2,
        n_layers: int = 2,
        expand: float = 1.5,
        d_state: int = 8,
        d_conv: int = 3,
        dt_rank: int | str = "auto",
        top_decoder: bool = True,
        sym_gain: float = 0.2,
        sym_init: float = 0.3,
        fwm_extra_residual: bool = False,
        use_fwm: bool = True,
        use_symmetry: bool = True,
        use_lem_gate: bool = True,
        lem_gate_released_view: bool = False,
    ) -> None:
        mixer = functools.partial(
            MambaBlock,
            expand=expand,
            d_state=d_state,
            d_conv=d_conv,
            dt_rank=dt_rank,
            use_fwm=use_fwm,
            fwm_extra_residual=fwm_extra_residual,
            use_symmetry=use_symmetry,
            sym_gain=sym_gain,
            sym_init=sym_init,
        )
        stage = StageOptions(
            depth=depth,
            n_layers=n_layers,
            use_lem_gate=use_lem_gate,
            lem_gate_released_view=lem_gate_released_view,
        )
        super().__init__(mixer, stage, in_channels=in_channels, embed_dim=embed_dim, top_decoder=top_decoder)
