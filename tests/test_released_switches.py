"""Released-code switches: each changes the output only where it acts; released presets build and run."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import build_model
from model.hybrimamba import LEM, HybriMamba
from model.rhmc import ECA, FAM, RGB_MEAN, RHMC, RMoE
from tests.helpers.ablation import assert_switch_changes_output
from utils.config import load_config

pytestmark = pytest.mark.usefixtures("single_thread")

RHMC_BASE = dict(embed_dim=4, depth=2, d_state=2, share_block_weights=True, in_project=False, wavelet="haar")
HM_TINY = dict(embed_dim=8, depth=1, n_layers=1, d_state=4)


def rhmc(**switches) -> RHMC:
    torch.manual_seed(0)
    return RHMC(**{**RHMC_BASE, **switches}).eval()


def perturb(model: nn.Module, seed: int = 1) -> nn.Module:
    """Move every parameter off its init (LayerNorm = identity, scales = 1, ...) so each switch is visible."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


# ------------------------------------------------------------------ HybriMamba
def released_lem(lem: LEM, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The released LEM.forward on (B, L, C) tokens, written from LateAutu/HybriMamba models/HibriMambaBlock.py."""
    batch, length, channels = tokens.shape
    x4d = tokens.transpose(1, 2).reshape(batch, channels, height, width)
    x1, x2 = lem.expand(x4d).chunk(2, dim=1)
    x1 = lem.attention(lem.dwconv(x1))
    x2 = lem.gate(x2.flatten(2).transpose(1, 2)).view(batch, channels, height, width)
    return lem.proj(x1 * x2).flatten(2).transpose(1, 2)


def test_lem_released_view_matches_the_released_formula_and_differs_from_the_figure():
    torch.manual_seed(0)
    lem = perturb(LEM(8, gate_released_view=True))
    x = torch.randn(2, 6, 6, 8)
    expected = released_lem(lem, x.reshape(2, 36, 8), 6, 6).reshape(2, 6, 6, 8)
    torch.testing.assert_close(lem(x), expected)
    lem.gate_released_view = False
    assert (lem(x) - expected).abs().max() > 1e-3


def test_lem_gate_released_view_changes_hybrimamba_on_the_same_weights():
    torch.manual_seed(0)
    released, figure = HybriMamba(**HM_TINY, lem_gate_released_view=True), perturb(HybriMamba(**HM_TINY))
    assert all(m.gate_released_view for m in released.modules() if isinstance(m, LEM))
    assert assert_switch_changes_output(released, figure, torch.rand(1, 3, 16, 16)) == set()


# ------------------------------------------------------------------ RHMC
@pytest.mark.parametrize(
    "switch, own_keys",
    [
        (dict(rgb_mean_shift=True), None),
        (dict(stage_end_norm=True), r"\w+\.norm\.(weight|bias)"),  # the 9 new stage-end LayerNorms
        (dict(block_norm_eps=0.5), None),
        (dict(rmoe_double_sigmoid=True), None),
        (dict(local_branch_released_view=True), None),
        (dict(fam_eca=False), None),  # drops the ECA kernels, adds nothing
        (dict(stb_band_copies=2), r"fusion\d\.stb\.conv_\w\w\.weight"),  # 2c inputs; biases are copied
    ],
)
def test_rhmc_switch_changes_output_on_the_figure_weights(switch, own_keys):
    figure = perturb(rhmc())
    switched = rhmc(**switch)
    kept = assert_switch_changes_output(switched, figure, torch.rand(1, 3, 16, 16))
    assert kept == {k for k in switched.state_dict() if own_keys and re.fullmatch(own_keys, k)}
    assert len(kept) == {None: 0, r"\w+\.norm\.(weight|bias)": 18}.get(own_keys, 9)


def test_rgb_mean_shift_acts_only_on_the_head_input():
    figure, shifted = rhmc(), rhmc(rgb_mean_shift=True)
    shifted.load_state_dict(figure.state_dict())
    with torch.no_grad():
        for model in (figure, shifted):
            model.head[0].weight.zero_()  # the head sees nothing of its input: the shift cannot matter
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(shifted(x), figure(x), rtol=0, atol=0)
        shifted.head[0].weight.fill_(0.3)
        figure.head[0].weight.fill_(0.3)
        mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1)
        torch.testing.assert_close(shifted(x + mean), figure(x) + mean)  # head(x + m - m); residual adds x + m


def test_block_norm_eps_reaches_exactly_the_released_1e6_norms():
    model = rhmc(block_norm_eps=1e-6, stage_end_norm=True)
    eps = {name: m.eps for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    small = {n for n, e in eps.items() if e == 1e-6}
    assert small == {
        n for n in eps if n.endswith((".norm", ".norm1", ".norm2")) and ".rssm.norm2" not in n
    }  # HMCB ln_1 / ln_2, MambaB ln_1, HMCBS norm
    assert {n for n, e in eps.items() if e == 1e-5} == {n for n in eps if n.endswith((".rssm.norm2", ".out_norm"))}
    assert sum(n.endswith(".norm") for n in small) == 9  # one per stage


def test_rmoe_double_sigmoid_and_released_view_match_the_released_hmcb_mixing():
    torch.manual_seed(2)
    rmoe = perturb(RMoE(16, double_sigmoid=True, released_view=True)).eval()
    g, loc = torch.randn(2, 4, 4, 16), torch.randn(2, 16, 4, 4)
    # SHMC.py HMCB.forward: mamba_x * sigmoid(C_Imap) + (sigmoid(S_Imap) * conv_x).view(B, L, C), C_Imap = ECAAttention
    c_imap = torch.sigmoid(rmoe.expert2(loc)).view(2, 1, 16)
    s_imap = rmoe.expert1(g.reshape(2, 16, 16).transpose(1, 2).reshape(2, 16, 4, 4))
    expected = g.reshape(2, 16, 16) * torch.sigmoid(c_imap) + (torch.sigmoid(s_imap) * loc).view(2, 16, 16)
    torch.testing.assert_close(rmoe(g, loc), expected.view(2, 4, 4, 16))


def test_fam_without_eca_is_the_released_fim():
    torch.manual_seed(3)
    fam = perturb(FAM(16, use_eca=False))
    assert fam.eca_a is None and not any(isinstance(m, ECA) for m in fam.modules())
    x = torch.randn(2, 16, 5, 4)
    gated = x * torch.sigmoid(fam.channel_gate(x.mean((2, 3)))).view(2, 16, 1, 1)  # their AdaptiveChannelGate
    x1 = fam.pw_a1(fam.dw_a(gated) + gated)  # FIM: pos_enc1, conv_spatial1_1, sigmoid(avg_pool) gate, ...
    x1 = fam.pw_a2(torch.sigmoid(F.adaptive_avg_pool2d(x1, 1)) * x1)
    x2 = fam.pw_b1(gated)
    x2 = fam.pw_b2(torch.sigmoid(F.adaptive_avg_pool2d(x2, 1)) * x2)
    torch.testing.assert_close(fam(x), x1 + fam.dw_b(x2) + x2)


def test_stb_band_copies_equals_one_copy_with_summed_channel_pairs():
    doubled = perturb(rhmc(stb_band_copies=2))
    single = rhmc()
    state = dict(doubled.state_dict())
    for key in [k for k in state if ".stb.conv_" in k and k.endswith("weight")]:
        state[key] = state[key][:, 0::2] + state[key][:, 1::2]
    single.load_state_dict(state)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(single(x), doubled(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="stb_band_copies must be >= 1"):
        rhmc(stb_band_copies=0)


# ------------------------------------------------------------------ presets
TINY_SETS = {
    "hybrimamba": ["model.embed_dim=4", "model.d_state=2", "model.depth=1", "model.n_layers=1"],
    "rhmc": ["model.embed_dim=4", "model.d_state=2", "model.depth=1"],
}


@pytest.mark.parametrize("name", ["hybrimamba", "rhmc"])
def test_released_presets_set_every_switch_and_run_16_to_128(name):
    cfg = load_config(f"configs/{name}_released.yaml", TINY_SETS[name])
    assert cfg["data"]["value_range"] == [-1, 1] and cfg["train"]["optimizer"]["weight_decay_policy"] == "all"
    released = {
        "hybrimamba": dict(top_decoder=False, fwm_extra_residual=True, lem_gate_released_view=True),
        "rhmc": dict(
            share_block_weights=True,
            in_project=False,
            wavelet="haar",
            rgb_mean_shift=True,
            stage_end_norm=True,
            block_norm_eps=1e-6,
            rmoe_double_sigmoid=True,
            local_branch_released_view=True,
            stb_band_copies=2,
            fam_eca=False,
        ),
    }[name]
    assert {k: cfg["model"][k] for k in released} == released
    torch.manual_seed(0)
    model = build_model(cfg["model"]).eval()
    lr = torch.rand(1, 3, 16, 16) * 2 - 1
    x = F.interpolate(lr, scale_factor=8, mode="bicubic", align_corners=False)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 128, 128) and torch.isfinite(y).all()


@pytest.mark.parametrize("name, count", [("hybrimamba", 16_746_423), ("rhmc", 14_456_933)])
def test_released_preset_parameter_counts(name, count):
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = build_model(load_config(f"configs/{name}_released.yaml")["model"])
    assert sum(p.numel() for p in model.parameters()) == count
    assert math.isclose(count, {"hybrimamba": 16.75e6, "rhmc": 14.46e6}[name], rel_tol=1e-3)
