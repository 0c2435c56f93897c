"""Test oracles: the released forwards rewritten with functional ops on state dicts in the released key names.

RHMC: RHMC-Project/RHMC model/HMC/SHMC.py, FDBNet with their FIM as FAM. HybriMamba: LateAutu/HybriMamba
models/HibriMambaBlock.py + models/mamba.py. Only the 4-direction scan reuses our SS2D (same parameters
and computation as theirs, tested on its own in test_ss2d.py).
"""

import torch
import torch.nn.functional as F

from model.rhmc import RGB_MEAN
from model.ss2d import SS2D

Weights = dict[str, torch.Tensor]


def _ln(w: Weights, p: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], w[f"{p}.weight"], w[f"{p}.bias"], eps)


def _conv(w: Weights, p: str, x: torch.Tensor, **kwargs) -> torch.Tensor:
    return F.conv2d(x, w[f"{p}.weight"], w.get(f"{p}.bias"), **kwargs)


def _linear(w: Weights, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w[f"{p}.weight"], w.get(f"{p}.bias"))


def _bn(w: Weights, p: str, x: torch.Tensor) -> torch.Tensor:
    stats = (w[f"{p}.running_mean"], w[f"{p}.running_var"], w[f"{p}.weight"], w[f"{p}.bias"])
    return F.batch_norm(x, *stats, training=False, eps=1e-5)


def _gap_gate(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(F.adaptive_avg_pool2d(x, 1)) * x


def _ss2d(w: Weights, p: str, x: torch.Tensor) -> torch.Tensor:
    dim, d_state = x.shape[-1], w[f"{p}.A_logs"].shape[1]
    scan = SS2D(dim, d_state=d_state, expand=2.0)
    scan.load_state_dict({k[len(p) + 1 :]: v for k, v in w.items() if k.startswith(p + ".")})
    return scan(x)


def _fim(w: Weights, p: str, x: torch.Tensor) -> torch.Tensor:
    groups = x.shape[1]
    x1 = _conv(w, f"{p}.pos_enc1", x, padding=1, groups=groups) + x
    x1 = _conv(w, f"{p}.conv_spatial1_2", _gap_gate(_conv(w, f"{p}.conv_spatial1_1", x1)))
    x2 = _conv(w, f"{p}.conv_spatial2_2", _gap_gate(_conv(w, f"{p}.conv_spatial2_1", x)))
    return x1 + _conv(w, f"{p}.pos_enc2", x2, padding=1, groups=groups) + x2


def _mamba_b(w: Weights, p: str, inp: torch.Tensor) -> torch.Tensor:
    x = inp * w[f"{p}.skip_scale"] + _ss2d(w, f"{p}.self_attention", _ln(w, f"{p}.ln_1", inp, 1e-6))
    y = _ln(w, f"{p}.ln_2", x, 1e-5).permute(0, 3, 1, 2)  # MambaB.ln_2 = nn.LayerNorm(dim): eps 1e-5
    gate = _linear(w, f"{p}.ACG.gate.2", F.relu(_linear(w, f"{p}.ACG.gate.0", y.mean((2, 3)))))
    y = _fim(w, f"{p}.FAMblk", y * torch.sigmoid(gate)[:, :, None, None])
    return x * w[f"{p}.skip_scale2"] + y.permute(0, 2, 3, 1)


def _hmcb(w: Weights, p: str, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    batch, length, c = x.shape
    inp = x.view(batch, height, width, c)
    xn = _ln(w, f"{p}.ln_1", inp, 1e-6)
    conv_x = F.gelu(_bn(w, f"{p}.dwconv.1", _conv(w, f"{p}.dwconv.0", xn.permute(0, 3, 1, 2), padding=1, groups=c)))
    mamba_x = _mamba_b(w, f"{p}.mamba_b", xn).reshape(batch, length, c)
    kernel = w[f"{p}.channel_interaction.conv.weight"]
    eca = torch.sigmoid(F.conv1d(conv_x.mean((2, 3)).unsqueeze(1), kernel, padding=kernel.shape[-1] // 2))
    s = mamba_x.transpose(1, 2).reshape(batch, c, height, width)
    s = _conv(w, f"{p}.spatial_interaction.0", s)
    s = _conv(w, f"{p}.spatial_interaction.3", F.gelu(_bn(w, f"{p}.spatial_interaction.1", s)))
    mixed = mamba_x * torch.sigmoid(eca.view(batch, 1, c)) + (torch.sigmoid(s) * conv_x).reshape(
        batch, length, c
    )  # their .view of NCHW memory
    x = inp * w[f"{p}.skip_scale1"] + _linear(w, f"{p}.proj", mixed).view(batch, height, width, c)
    y = _ln(w, f"{p}.ln_2", x, 1e-6).permute(0, 3, 1, 2)
    y = _conv(w, f"{p}.convffn.conv2", F.gelu(_conv(w, f"{p}.convffn.conv1", y))).permute(0, 2, 3, 1)
    return (x * w[f"{p}.skip_scale2"] + y).reshape(batch, length, c)


def _hmcbs(w: Weights, p: str, x: torch.Tensor, depth: int) -> torch.Tensor:
    batch, c, height, width = x.shape
    tokens = x.flatten(2).transpose(1, 2)
    for _ in range(depth):
        tokens = _hmcb(w, f"{p}.HMCB", tokens, height, width)
    return _ln(w, f"{p}.norm", tokens, 1e-6).transpose(1, 2).reshape(batch, c, height, width)


def _wave_pool(w: Weights, p: str, x: torch.Tensor) -> list[torch.Tensor]:
    return [F.conv2d(x, w[f"{p}.{b}.weight"], stride=2, groups=x.shape[1]) for b in ("LL", "LH", "HL")]


def _decode(w: Weights, i: int, d: torch.Tensor, bands: list[torch.Tensor]) -> torch.Tensor:
    level = 2 - i
    left, right = d.chunk(2, dim=1)
    highs = [_conv(w, f"high{level}_{b}", t, padding=1) for b, t in zip(("LL", "LH", "HL"), bands)]
    filters = [w[f"recon_block{i}.{b}.weight"] for b in ("LL", "LH", "HL", "HH")]
    left = sum(F.conv_transpose2d(t, f, stride=2, groups=left.shape[1]) for t, f in zip([*highs, left], filters))
    right = F.conv_transpose2d(right, w[f"Upsample{i}.weight"], w[f"Upsample{i}.bias"], stride=2)
    return _conv(w, f"up{i}", torch.cat([left, right], 1))


def released_rhmc_forward(w: Weights, x: torch.Tensor, depth: int = 2) -> torch.Tensor:
    """FDBNet.forward (img_range 1) on a released state dict without wrapper prefixes."""
    mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1)
    x = x - mean
    y = F.gelu(_conv(w, "shallow_conv", x, padding=1))
    skips = []
    for i in range(3):
        y = _hmcbs(w, f"encoderlayer_{i}", y, depth)
        skips.append(_wave_pool(w, f"wave_pool{i}", y))
        y = _conv(w, f"pool{i}", y, stride=2, padding=1)
    trans3 = _hmcbs(w, "encoderlayer_3", y, depth)
    d = torch.cat([_hmcbs(w, "encoderlayer_bottom", trans3, depth), trans3], 1)
    for i in range(3):
        d = _decode(w, i, _hmcbs(w, f"decoderlayer_{i}", d, depth), skips[2 - i])
    d = _hmcbs(w, "decoderlayer_3", d, depth)
    return F.gelu(_conv(w, "out", d, padding=1)) + x + mean


def _rms(w: Weights, p: str, x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w[f"{p}.weight"]


def _freq_model(w: Weights, p: str, x: torch.Tensor) -> torch.Tensor:
    """mamba.py FrequencyModeling: x + Fourier(x) + Wavelet(x), pytorch_wavelets Haar in its default mode."""
    from pytorch_wavelets import DWTForward, DWTInverse

    height, width = x.shape[-2:]
    spectrum = torch.fft.rfft2(x, norm="ortho")
    magnitude = _conv(w, f"{p}.fft_conv.2", F.gelu(_conv(w, f"{p}.fft_conv.0", spectrum.abs())))
    fourier = torch.fft.irfft2(magnitude * torch.exp(1j * spectrum.angle()), s=(height, width), norm="ortho")
    low, highs = DWTForward(J=1, wave="haar")(x)
    bands = torch.stack([_conv(w, f"{p}.wave_conv", highs[0][:, :, i], padding=1) for i in range(3)], dim=2)
    wavelet = DWTInverse(wave="haar")((low[:, :, : height // 2, : width // 2], [bands]))
    return x + fourier + wavelet


def _mixer(w: Weights, p: str, x: torch.Tensor) -> torch.Tensor:
    """mamba.py MambaBlock.forward on (B, L, D) tokens; the 4-direction scan is our SS2D.forward_core."""
    batch, length, dim = x.shape
    side = int(length**0.5)
    xs, z = _linear(w, f"{p}.in_proj", x.view(batch, side, side, dim)).chunk(2, dim=-1)
    xs = xs + _freq_model(w, f"{p}.freq_model", xs.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    inner = xs.shape[-1]
    xs = F.silu(_conv(w, f"{p}.conv2d", xs.permute(0, 3, 1, 2), padding=1, groups=inner))
    scan = SS2D(dim, d_state=w[f"{p}.A_logs"].shape[1], expand=inner / dim)
    for name in ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"):
        getattr(scan, name).data.copy_(w[f"{p}.{name}"])
    y = scan.forward_core(xs)  # (B, Di, H, W): y1 + y2 + y3 + y4
    a = torch.sigmoid(w[f"{p}.symmetry_enhance.symmetry_weight"])
    y = y + 0.2 * (y * (1 - a) + (y + y.flip(-1)) / 2 * a)
    y = _ln(w, f"{p}.out_norm", y.permute(0, 2, 3, 1), 1e-5) * F.silu(z)
    return _linear(w, f"{p}.out_proj", y).view(batch, length, dim)


def _lem(w: Weights, p: str, x: torch.Tensor) -> torch.Tensor:
    """HibriMambaBlock.py LEM.forward, the version whose gate output is ``.view(B, C, H, W)``-ed."""
    batch, length, c = x.shape
    side = int(length**0.5)
    x1, x2 = _conv(w, f"{p}.expand", x.transpose(1, 2).reshape(batch, c, side, side)).chunk(2, dim=1)
    x1 = _conv(w, f"{p}.ca.0", x1, padding=1, groups=c)
    squeeze = _conv(w, f"{p}.ca.1.att.3", F.relu(_conv(w, f"{p}.ca.1.att.1", F.adaptive_avg_pool2d(x1, 1))))
    x1 = x1 * torch.sigmoid(squeeze)
    gate = _ln(w, f"{p}.gate.0", x2.flatten(2).transpose(1, 2), 1e-5)
    gate = _linear(w, f"{p}.gate.3", F.gelu(_linear(w, f"{p}.gate.1", gate))).reshape(batch, c, side, side)
    return _conv(w, f"{p}.smooth", x1 * gate).flatten(2).transpose(1, 2)


def _hibrimamba(w: Weights, p: str, x: torch.Tensor, depth: int, n_layers: int) -> torch.Tensor:
    for i in range(depth):
        y = _ln(w, f"{p}.layers.{i}.0.norm", x, 1e-5)
        for j in range(n_layers):
            y = (
                _mixer(w, f"{p}.layers.{i}.0.fn.layers.{j}.mixer", _rms(w, f"{p}.layers.{i}.0.fn.layers.{j}.norm", y))
                + y
            )
        x = y + x
        x = _lem(w, f"{p}.layers.{i}.1.fn", _ln(w, f"{p}.layers.{i}.1.norm", x, 1e-5)) + x
    return x


def _resample(w: Weights, p: str, x: torch.Tensor, down: bool) -> torch.Tensor:
    batch, length, c = x.shape
    side = int(length**0.5)
    x = x.transpose(1, 2).reshape(batch, c, side, side)
    x = F.conv2d(x, w[f"{p}.0.weight"], stride=2 if down else 1, padding=1, groups=c)
    x = F.conv2d(x, w[f"{p}.1.weight"])
    return (x if down else F.pixel_shuffle(x, 2)).flatten(2).transpose(1, 2)


def released_hybrimamba_forward(w: Weights, x: torch.Tensor, depth: int = 2, n_layers: int = 2) -> torch.Tensor:
    """HibriMambaBlock.forward on a released state dict without the ``module.`` prefix."""
    batch, _, height, width = x.shape
    stage = lambda name, t: _hibrimamba(w, name, t, depth, n_layers)  # noqa: E731
    t0 = stage("encoderlayer_0", F.leaky_relu(_conv(w, "shallow_conv", x, padding=1)).flatten(2).transpose(1, 2))
    t1 = stage("encoderlayer_1", _resample(w, "pool0.conv.op", t0, down=True))
    t2 = stage("encoderlayer_2", _resample(w, "pool1.conv.op", t1, down=True))
    d = stage("decoderlayer_1", torch.cat([stage("encoderlayer_bottom", t2), t2], -1))
    d = stage("decoderlayer_2", torch.cat([_resample(w, "Upsample1.deconv.op", d, down=False), t1], -1))
    d = torch.cat([_resample(w, "Upsample2.deconv.op", d, down=False), t0], -1)
    return F.leaky_relu(_conv(w, "out", d.transpose(1, 2).reshape(batch, -1, height, width), padding=1)) + x
