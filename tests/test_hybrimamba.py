"""HybriMamba (generic checks: test_models.py): top decoder, bf16 backward, closed forms of FWM / symmetry
enhancement / LEM, switches, overfit.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import build_model
from model.hybrimamba import (
    FWM,
    LEM,
    ChannelAttention,
    Downsample,
    HybriMamba,
    HybriMambaStage,
    MambaBlock,
    SymmetryEnhancement,
    Upsample,
)
from tests.helpers.ablation import assert_switch_changes_output
from tests.helpers.faces import four_face_crops
from tests.helpers.tiny import TINY as TINY_OPTIONS
from utils.config import load_config

TINY = TINY_OPTIONS["hybrimamba"].options  # the tiny options of tests/helpers/tiny.py


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**kwargs) -> HybriMamba:
    torch.manual_seed(0)
    return HybriMamba(**{**TINY, **kwargs})


def block_mean(x: torch.Tensor) -> torch.Tensor:
    """Every 2x2 block replaced by its mean: the Haar reconstruction from LL alone."""
    return F.avg_pool2d(x, 2).repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


@pytest.mark.parametrize("size, top_decoder", [((16, 24), True), ((16, 24), False)])
def test_forward_shape_contiguous_with_and_without_top_decoder(size, top_decoder):
    x = torch.rand(2, 3, *size)
    y = tiny(top_decoder=top_decoder)(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.is_contiguous()


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # CPU rms_norm: unfused path
def test_bf16_autocast_forward_and_backward():
    model = tiny()
    x = torch.rand(1, 3, 16, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"divisible by 4.*\(18, 16\)"):
        tiny()(torch.rand(1, 3, 18, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 1, 16, 16\)"):
        tiny()(torch.rand(1, 1, 16, 16))


def test_u_shape_widths_and_stage_layout():
    model = tiny(depth=2, n_layers=3)
    c = TINY["embed_dim"]
    widths = {
        name: getattr(model, name).mamba_norms[0].normalized_shape[0]
        for name in ("encoder0", "encoder1", "encoder2", "transformation", "decoder1", "decoder2", "decoder3")
    }
    assert widths == dict(
        encoder0=c, encoder1=2 * c, encoder2=4 * c, transformation=4 * c, decoder1=8 * c, decoder2=4 * c, decoder3=2 * c
    )
    stage = model.encoder1
    assert isinstance(stage, HybriMambaStage) and len(stage.mambas) == len(stage.lems) == 2
    assert all(len(stack.blocks) == 3 and isinstance(stack.norms[0], nn.RMSNorm) for stack in stage.mambas)
    block = stage.mambas[0].blocks[0]
    assert isinstance(block, MambaBlock) and block.d_inner == int(1.5 * 2 * c) and block.d_state == 4
    assert isinstance(block.pre_conv, FWM) and isinstance(block.post_scan, SymmetryEnhancement)
    assert block.conv2d.kernel_size == (3, 3) and block.dt_rank == math.ceil(2 * c / 16)


def test_fwm_with_zeroed_convs_is_x_plus_haar_block_mean():
    torch.manual_seed(0)
    fwm = FWM(4).double()
    with torch.no_grad():
        for conv in (fwm.magnitude[2], fwm.high_conv):
            conv.weight.zero_()
            conv.bias.zero_()
    x = torch.randn(2, 4, 8, 12, dtype=torch.float64)
    torch.testing.assert_close(fwm.fourier(x), torch.zeros_like(x))
    torch.testing.assert_close(fwm(x), x + block_mean(x))
    fwm.extra_residual = True  # the authors' variant adds x once more
    torch.testing.assert_close(fwm(x), 2 * x + block_mean(x))


def test_fwm_branches_with_identity_maps_reconstruct_x():
    fwm = FWM(3).double()
    fwm.magnitude = nn.Identity()  # magnitude unchanged: irfft2(|X| e^{i angle X}) = x
    with torch.no_grad():
        nn.init.dirac_(fwm.high_conv.weight)
        fwm.high_conv.bias.zero_()  # high bands unchanged: perfect Haar reconstruction
    x = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    torch.testing.assert_close(fwm.fourier(x), x)
    torch.testing.assert_close(fwm.wavelet(x), x)
    torch.testing.assert_close(fwm(x), 3 * x)


def test_fwm_wavelet_pads_odd_sizes_and_crops_back():
    fwm = FWM(2).double()
    with torch.no_grad():
        fwm.high_conv.weight.zero_()
        fwm.high_conv.bias.zero_()
    x = torch.randn(1, 2, 5, 3, dtype=torch.float64)
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")
    torch.testing.assert_close(fwm.wavelet(x), block_mean(padded)[..., :5, :3])


def test_fwm_wavelet_applies_one_conv_to_each_high_band():
    torch.manual_seed(1)
    fwm = FWM(3)
    x = torch.randn(2, 3, 8, 6)
    low, highs = fwm.dwt(x)
    bands = [fwm.high_conv(highs[:, :, i]) for i in range(3)]
    torch.testing.assert_close(fwm.wavelet(x), fwm.idwt(low, torch.stack(bands, dim=2)))


def test_fwm_fourier_matches_hand_written_spectrum():
    torch.manual_seed(2)
    fwm = FWM(2).double()
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64)
    spectrum = torch.fft.fft2(x) / math.sqrt(24)  # orthonormal full FFT; rfft2 keeps W/2+1 columns
    half = spectrum[..., :4]
    magnitude = fwm.magnitude(half.abs())
    expected = torch.fft.irfft2(magnitude * half / half.abs() * math.sqrt(24), s=(4, 6))
    torch.testing.assert_close(fwm.fourier(x), expected)


def test_symmetry_enhancement_closed_forms():
    enhance = SymmetryEnhancement(gain=0.2, init=0.3)
    a = 1 / (1 + math.exp(-0.3))
    z = torch.randn(2, 5, 4, 6)
    symmetric = z + z.flip(-1)
    antisymmetric = z - z.flip(-1)
    torch.testing.assert_close(enhance(symmetric), 1.2 * symmetric)  # unchanged up to the gain
    torch.testing.assert_close(enhance(antisymmetric), (1 + 0.2 * (1 - a)) * antisymmetric)
    y = torch.zeros(1, 1, 1, 4)
    y[..., 0] = 1.0  # only the left-most pixel: half of the blend lands on the mirrored pixel
    assert enhance(y).flatten().tolist() == pytest.approx([1 + 0.2 * (1 - a / 2), 0, 0, 0.2 * a / 2])


def test_lem_shape_gate_and_channel_attention():
    torch.manual_seed(3)
    lem = LEM(8)
    x = torch.randn(2, 6, 10, 8)
    assert lem(x).shape == x.shape
    with torch.no_grad():  # zero pixel-wise gate Wg: out = Conv1x1(0) = its bias at every pixel
        lem.gate[3].weight.zero_()
        lem.gate[3].bias.zero_()
    torch.testing.assert_close(lem(x), lem.proj.bias.expand_as(x))
    no_gate = LEM(8, use_gate=False)
    assert no_gate.gate is None and no_gate.expand.out_channels == 8 and no_gate(x).shape == x.shape
    attention = ChannelAttention(32)
    assert attention.squeeze[1].out_channels == 2
    with torch.no_grad():
        attention.squeeze[3].weight.zero_()
        attention.squeeze[3].bias.zero_()
    f = torch.randn(2, 32, 3, 4)
    torch.testing.assert_close(attention(f), 0.5 * f)


def test_down_and_upsample_shapes_on_tokens():
    x = torch.randn(2, 8, 12, 4)
    down = Downsample(4, 8)
    assert down(x).shape == (2, 4, 6, 8)
    assert Upsample(8, 4)(down(x)).shape == (2, 8, 12, 4)
    assert all(m.bias is None for m in (*down.modules(), *Upsample(8, 4).modules()) if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(
    "switches, absent",
    [
        (dict(use_fwm=False), FWM),
        (dict(use_symmetry=False), SymmetryEnhancement),
        (dict(use_lem_gate=False), None),
        (dict(top_decoder=False), None),
        (dict(fwm_extra_residual=True), None),
        (dict(sym_gain=1.0), None),
    ],
)
def test_switches_change_the_computation(switches, absent):
    model, full = tiny(**switches), tiny()
    if absent is not None:
        assert not any(isinstance(m, absent) for m in model.modules())
        assert any(isinstance(m, absent) for m in full.modules())
    if "use_lem_gate" in switches:
        assert all(m.gate is None for m in model.modules() if isinstance(m, LEM))
    if "top_decoder" in switches:
        assert model.decoder3 is None
    kept = assert_switch_changes_output(model, full, torch.rand(1, 3, 16, 16))
    assert kept == (LEM_EXPAND if "use_lem_gate" in switches else set())  # all else runs on full's weights


LEM_EXPAND = {
    f"{s}.lems.0.expand.{p}"
    for s in ("encoder0", "encoder1", "encoder2", "transformation", "decoder1", "decoder2", "decoder3")
    for p in ("weight", "bias")
}


def test_default_parameter_count_matches_released_network():
    model = HybriMamba()  # the authors' network, every nn.Parameter counted: 17.35M
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 17.35e6) < 0.005 * 17.35e6, count
    top = sum(p.numel() for p in model.decoder3.parameters())
    assert sum(p.numel() for p in HybriMamba(top_decoder=False).parameters()) == count - top


def test_configs_load_and_build():
    cfg = load_config("configs/hybrimamba_x8_celeba.yaml")
    assert cfg["model"]["name"] == "hybrimamba" and cfg["train"]["optimizer"]["betas"] == [0.9, 0.99]
    assert cfg["train"]["scheduler"]["milestones"] == [20, 40, 60, 80, 100]
    model = build_model(load_config("configs/hybrimamba_tiny.yaml")["model"])
    assert isinstance(model, HybriMamba) and model.decoder3 is not None


def test_tiny_config_overfits_four_face_crops():
    cfg = load_config("configs/hybrimamba_tiny.yaml")
    torch.manual_seed(0)
    model = build_model(cfg["model"])
    lr_up, hr = four_face_crops(slice(40, 200), slice(148, 308))
    bicubic = F.l1_loss(lr_up, hr).item()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        loss = F.l1_loss(model(lr_up), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert losses[-1] < 1.05 * bicubic, (bicubic, losses)  # the random initial residual is unlearned
