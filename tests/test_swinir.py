"""SwinIR (generic checks: test_models.py): padding to the window, attention against a naive oracle, shift mask,
counts, names of the release.
"""

import pytest
import torch

from metrics.complexity import count_flops, count_parameters, profile
from model import build_model
from model.swinir import SwinIR, SwinTransformerLayer, WindowAttention, shifted_window_mask
from tests.helpers.tiny import TINY as TINY_OPTIONS
from tools.convert_released import to_ours, to_released

TINY = TINY_OPTIONS["swinir"].options  # the tiny options of tests/helpers/tiny.py

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**kwargs) -> SwinIR:
    torch.manual_seed(0)
    return SwinIR(**{**TINY, **kwargs})


def test_lr_in_padding_to_the_window():
    net = tiny()
    assert SwinIR.lr_input
    assert net(torch.rand(1, 3, 10, 14)).shape == (1, 3, 80, 112)  # reflect-padded to 12x16, cropped back


def test_window_attention_matches_a_naive_softmax():
    torch.manual_seed(1)
    attn = WindowAttention(dim=6, window=2, heads=2).double()
    torch.nn.init.normal_(attn.relative_position_bias_table)
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    q, k, v = attn.qkv(x).view(3, 4, 3, 2, 3).permute(2, 0, 3, 1, 4)
    offsets = [(i // 2 - j // 2 + 1) * 3 + (i % 2 - j % 2 + 1) for i in range(4) for j in range(4)]
    bias = attn.relative_position_bias_table[offsets].view(4, 4, 2).permute(2, 0, 1)
    mask = torch.zeros(3, 4, 4, dtype=torch.float64)
    mask[1, 0, 3] = mask[2, 2, 1] = -100.0
    weights = torch.softmax(q @ k.transpose(-2, -1) / 3**0.5 + bias + mask[:, None], dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(3, 4, 6))
    torch.testing.assert_close(attn(x, mask), expected)


def test_shift_mask_separates_the_rolled_regions():
    mask = shifted_window_mask(16, 16, window=8, shift=4)
    assert mask.shape == (4, 64, 64)
    assert (mask[0] == 0).all()  # the top-left window holds one region
    last = mask[3]
    assert (last == -100).float().mean() == 0.75  # four equal regions: 3/4 of the pairs cross a boundary
    layer = SwinTransformerLayer(12, 2, window=8, shift=4, mlp_ratio=2, drop_path=0, resolution=8)
    assert layer.shift == 0 and layer.window == 8  # map not larger than the window: no shift (authors' rule)


def test_rebuilt_buffers_are_not_stored_and_the_released_names():
    a, b = tiny().eval(), tiny().eval()
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.rand(1, 3, 16, 16)
    assert not any("mask" in k or "index" in k or k == "mean" for k in a.state_dict())  # rebuilt, not stored
    theirs = to_released(a.state_dict(), "swinir", 12)
    expected = {  # JingyunLiang/SwinIR models/network_swinir.py
        "patch_embed.norm.weight": (12,),
        "layers.0.residual_group.blocks.1.attn.relative_position_bias_table": (49, 2),
        "layers.1.residual_group.blocks.0.attn.qkv.weight": (36, 12),
        "layers.1.residual_group.blocks.1.mlp.fc2.weight": (12, 24),
        "layers.1.conv.bias": (12,),
        "conv_before_upsample.0.weight": (64, 12, 3, 3),
        "upsample.4.weight": (256, 64, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    }
    assert {k: tuple(theirs[k].shape) for k in expected} == expected
    theirs["layers.0.residual_group.blocks.1.attn_mask"] = a.layers[0].layers[1].attn_mask  # their persistent buffers
    theirs["layers.0.residual_group.blocks.1.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    b.load_state_dict(to_ours({"params": theirs}["params"], "swinir", b, 12))
    assert torch.equal(a(x), b(x))


def test_table1_configuration_counts():
    """Table 1: 11.9M / 3.8G; ours 12.05M, 3.97 GMACs at the 16x16 LR (thop skips the attention matmuls: 3.76)."""
    net = build_model({"name": "swinir"})
    assert abs(count_parameters(net) / 11.9e6 - 1) < 0.03
    assert abs(count_flops(net, (16, 16))["macs"] / 3.8e9 - 1) < 0.15
    report = profile({"name": "swinir", **TINY}, devices=())  # metrics.complexity's default: the LR of 128x128
    assert report["size"] == [16, 16]
