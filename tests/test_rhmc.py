"""RHMC (generic checks: test_models.py): size error, bf16 backward, closed-form checks of SFB / ECA / RMoE, weight
sharing, a tiny overfit.
"""

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from model import build_model
from model.rhmc import ECA, RHMC, SFB, RMoE, eca_kernel_size
from tests.helpers.ablation import assert_switch_changes_output
from tests.helpers.faces import four_face_crops
from utils.config import load_config

TINY = dict(embed_dim=4, depth=1, d_state=4)


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**kwargs) -> RHMC:
    torch.manual_seed(0)
    return RHMC(**{**TINY, **kwargs})


def test_bad_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"divisible by 8.*\(1, 3, 20, 16\)"):
        tiny()(torch.rand(1, 3, 20, 16))


@pytest.mark.parametrize("wavelet", ["sym4", "haar"])
def test_sfb_with_zero_stb_is_hh_synthesis_of_p(wavelet):
    c, batch, h, w = 2, 2, 4, 6
    sfb = SFB(c, wavelet)
    with torch.no_grad():
        for conv in (sfb.stb.conv_ll, sfb.stb.conv_lh, sfb.stb.conv_hl, sfb.up):
            conv.weight.zero_()
            conv.bias.zero_()
        sfb.fuse.weight.zero_()
        sfb.fuse.weight[:, :, 0, 0] = torch.cat([torch.eye(2 * c), torch.zeros(2 * c, 2 * c)], dim=1)
        sfb.fuse.bias.zero_()
    d = torch.randn(batch, h, w, 4 * c, dtype=torch.float64)
    e = torch.randn(batch, 2 * h, 2 * w, c, dtype=torch.float64)
    with torch.no_grad():
        out = sfb.double()(d, e).numpy()
    assert out.shape == (batch, 2 * h, 2 * w, 2 * c)
    zeros = np.zeros((h, w))
    for b in range(batch):
        for ch in range(2 * c):  # P = first half of D's channels, in the HH (cD) slot
            expected = pywt.idwt2((zeros, (zeros, zeros, d[b, :, :, ch].numpy())), wavelet, mode="periodization")
            np.testing.assert_allclose(out[b, :, :, ch], expected, atol=1e-6)


def test_eca_kernel_sizes_and_logits():
    widths = [8, 16, 32, 64, 128, 256, 512]
    assert [eca_kernel_size(w) for w in widths] == [3, 3, 3, 3, 5, 5, 5]
    assert [ECA(w).conv.kernel_size[0] for w in widths] == [3, 3, 3, 3, 5, 5, 5]
    eca = ECA(8)
    x = torch.randn(2, 8, 4, 5)
    kernel = eca.conv.weight.detach().view(3).numpy()
    means = np.pad(x.mean((2, 3)).numpy(), ((0, 0), (1, 1)))
    expected = np.stack([[means[b, i : i + 3] @ kernel for i in range(8)] for b in range(2)])
    np.testing.assert_allclose(eca(x).detach().view(2, 8).numpy(), expected, atol=1e-6)


def test_rmoe_gates_and_mixture():
    torch.manual_seed(1)
    rmoe = RMoE(16).eval()
    g, loc = torch.randn(2, 8, 6, 16), torch.randn(2, 16, 8, 6)
    spatial, channel = rmoe.gates(g, loc)
    assert spatial.shape == (2, 1, 8, 6) and channel.shape == (2, 16, 1, 1)
    for gate in (spatial, channel):
        assert (gate > 0).all() and (gate < 1).all()
    expected = g * channel.view(2, 1, 1, 16) + (loc * spatial).permute(0, 2, 3, 1)
    torch.testing.assert_close(rmoe(g, loc), expected)


def test_shared_block_weights_equal_distinct_blocks_with_copied_weights():
    shared, distinct = tiny(depth=2, share_block_weights=True).eval(), tiny(depth=2).eval()
    shared_keys, distinct_keys = set(shared.state_dict()), set(distinct.state_dict())
    assert shared_keys == {k for k in distinct_keys if ".blocks.1." not in k}
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in distinct.parameters())
    state = dict(shared.state_dict())
    state.update(
        {k.replace(".blocks.0.", ".blocks.1."): v for k, v in shared.state_dict().items() if ".blocks.0." in k}
    )
    distinct.load_state_dict(state)
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(distinct(x), shared(x))


@pytest.mark.parametrize("switches", [dict(use_rmoe=False), dict(use_fam=False), dict(in_project=False)])
def test_ablation_switches_drop_their_parameters(switches):
    model, full = tiny(**switches), tiny()
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())
    name = {"use_rmoe": ".rmoe.", "use_fam": ".fam.", "in_project": ".project_in."}[next(iter(switches))]
    assert not any(name in k for k in model.state_dict()) and any(name in k for k in full.state_dict())
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


@pytest.mark.parametrize(
    "switches", [dict(use_rmoe=False), dict(use_fam=False), dict(wavelet="haar"), dict(share_block_weights=True)]
)
def test_ablation_switches_change_the_computation(switches):
    full = tiny(depth=2)
    kept = assert_switch_changes_output(tiny(depth=2, **switches), full, torch.rand(1, 3, 16, 16))
    if "wavelet" in switches:  # only the fixed filter buffers differ (8 sym4 taps vs 2 haar taps)
        kept = {k for k in kept if not k.split(".")[-1].startswith(("h0_", "h1_", "g0_", "g1_"))}
    assert kept == set()  # ablated models run on the full model's weights: only the computation differs


def test_tiny_config_builds_and_overfits_four_face_crops():
    cfg = load_config("configs/rhmc_tiny.yaml")
    torch.manual_seed(0)
    model = build_model(cfg["model"])
    assert isinstance(model, RHMC)
    lr_up, hr = four_face_crops(slice(56, 184), slice(164, 292))
    bicubic_l1 = F.l1_loss(lr_up, hr).item()
    opt = torch.optim.Adam(model.parameters(), lr=cfg["train"]["optimizer"]["lr"])
    losses = []
    for _ in range(60):
        loss = F.l1_loss(model(lr_up), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = sum(losses[-3:]) / 3
    assert final < 0.5 * losses[0] and final < 0.75 * bicubic_l1, (bicubic_l1, losses)


def test_bf16_autocast_trains():
    model = tiny()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 3, 16, 16))
    out.float().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
