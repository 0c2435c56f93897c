"""MambaIR (generic checks: test_models.py): other scales, RSSB / CAB closed forms, scan backends, counts, names of
the release.
"""

import pytest
import torch

from metrics.complexity import count_flops, count_parameters
from model import build_model
from model.build import bind_scan
from model.mambair import CAB, RSSB, MambaIR
from model.ss2d import SS2D
from model.ssm import resolve_backend
from tests.helpers.tiny import TINY as TINY_OPTIONS
from tools.convert_released import to_ours, to_released

TINY = TINY_OPTIONS["mambair"].options  # the tiny options of tests/helpers/tiny.py

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**kwargs) -> MambaIR:
    torch.manual_seed(0)
    return MambaIR(**{**TINY, **kwargs})


def test_lr_in_other_scale_non_square():
    assert MambaIR.lr_input
    assert tiny(scale=4)(torch.rand(1, 3, 6, 10)).shape == (1, 3, 24, 40)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny()(torch.rand(1, 1, 16, 16))


def test_rssb_with_silent_branches_is_the_product_of_its_skip_scales():
    torch.manual_seed(1)
    block = RSSB(30, d_state=2, expand=2.0, drop_path=0.0).eval()
    assert isinstance(block.vssm, SS2D) and block.vssm.d_inner == 60 and block.vssm.dt_rank == 2
    with torch.no_grad():
        block.vssm.out_proj.weight.zero_()
        block.cab.cab[2].weight.zero_()
        block.cab.cab[2].bias.zero_()
        block.skip_scale.uniform_(0.5, 1.5)
        block.skip_scale2.uniform_(0.5, 1.5)
    x = torch.randn(2, 4, 5, 30)
    torch.testing.assert_close(block(x), x * block.skip_scale * block.skip_scale2)


def test_cab_channel_attention_halves_with_a_zero_squeeze():
    cab = CAB(30)
    assert cab.cab[0].out_channels == 10 and cab.cab[3].attention[1].out_channels == 1
    with torch.no_grad():
        cab.cab[3].attention[3].weight.zero_()
        cab.cab[3].attention[3].bias.zero_()
    x = torch.randn(1, 30, 4, 4)
    torch.testing.assert_close(cab(x), 0.5 * cab.cab[2](cab.cab[1](cab.cab[0](x))))


def test_scan_backends_agree():
    net, x = tiny().eval(), torch.rand(1, 3, 8, 8)
    outs = []
    for backend in ("reference", "torch"):
        bind_scan(net, resolve_backend(backend, x.device))
        with torch.no_grad():
            outs.append(net(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_released_names_round_trip():
    a, b = tiny().eval(), tiny().eval()
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.rand(1, 3, 16, 16)
    theirs = to_released(a.state_dict(), "mambair", 30)
    block = "layers.1.residual_group.blocks.1"  # csguoh/MambaIR basicsr/archs/mambair_arch.py
    expected = {
        "patch_embed.norm.bias": (30,),
        f"{block}.ln_1.weight": (30,),
        f"{block}.skip_scale2": (30,),
        f"{block}.self_attention.x_proj_weight": (4, 2 + 2 * 2, 60),
        f"{block}.self_attention.A_logs": (4 * 60, 2),
        f"{block}.self_attention.out_norm.weight": (60,),
        f"{block}.conv_blk.cab.0.weight": (10, 30, 3, 3),
        f"{block}.conv_blk.cab.3.attention.1.weight": (1, 30, 1, 1),
        "layers.1.conv.weight": (30, 30, 3, 3),
        "upsample.2.bias": (256,),
        "conv_last.bias": (3,),
    }
    assert {k: tuple(theirs[k].shape) for k in expected} == expected
    b.load_state_dict(to_ours({"params": theirs}["params"], "mambair", b, 30))
    assert torch.equal(a(x), b(x))


def test_table1_configuration_counts():
    """Table 1: 20.4M / 5.3G; ours 20.72M, 5.73 GMACs of ops at the 16x16 LR (+0.97 G of selective scan)."""
    net = build_model({"name": "mambair"})
    assert abs(count_parameters(net) / 20.4e6 - 1) < 0.03
    flops = count_flops(net, (16, 16))
    assert abs(flops["op_flops"] / 2 / 5.3e9 - 1) < 0.15
