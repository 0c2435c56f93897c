"""SPARNet (generic checks: test_models.py): attention range, size errors, the released counts and key names."""

import pytest
import torch

from metrics.complexity import count_flops, count_parameters
from model.registry import build_model
from model.sparnet import FaceAttentionUnit, HourglassAttention
from tests.helpers.tiny import TINY as TINY_OPTIONS
from tools.convert_released import to_ours, to_released

TINY = {"name": "sparnet", **TINY_OPTIONS["sparnet"].options}  # the tiny options of tests/helpers/tiny.py


def test_attention_map_is_in_unit_interval_with_requested_channels() -> None:
    att = HourglassAttention(c_in=8, c_attn=1, depth=2, c_mid=8)
    a = att(torch.randn(2, 8, 12, 20))
    assert a.shape == (2, 1, 12, 20)
    assert (a > 0).all() and (a < 1).all()


def test_fau_scales_and_attention_gates_residual() -> None:
    assert FaceAttentionUnit(8, 16, "down", 1)(torch.randn(1, 8, 16, 16)).shape == (1, 16, 8, 8)
    assert FaceAttentionUnit(16, 8, "up", 1)(torch.randn(1, 16, 8, 8)).shape == (1, 8, 16, 16)
    fau = FaceAttentionUnit(8, 8, "none", 1).eval()
    torch.nn.init.constant_(fau.attention.out[0].conv.weight, 0.0)
    torch.nn.init.constant_(fau.attention.out[0].conv.bias, -100.0)  # map ~ 0: the block is the identity
    x = torch.randn(1, 8, 8, 8)
    assert torch.allclose(fau(x), x, atol=1e-6)


def test_counts_are_the_released_ones() -> None:
    """Face-SPARNet README: SPARNet (released) 10.52M, SPARNet-Light-Attn3D 5.24M; Table 1: 10.6M / 7.1G."""
    net = build_model({"name": "sparnet"})
    assert count_parameters(net) == 10_518_867
    light = build_model({"name": "sparnet", "res_depth": 1, "att_3d": True})
    assert round(count_parameters(light) / 1e6, 2) == 5.24
    macs = count_flops(net, (128, 128))["macs"]
    assert abs(macs / 7.1e9 - 1) < 0.15  # Table 1's "7.1G" are MACs at the 128x128 input (ours 7.13G)


def test_3d_attention_has_one_map_per_channel() -> None:
    fau = FaceAttentionUnit(8, 16, "down", 1, att_3d=True)
    assert fau.attention.out[0].conv.out_channels == 16
    assert fau(torch.randn(1, 8, 8, 8)).shape == (1, 16, 4, 4)


def test_size_errors_and_the_smallest_size() -> None:
    a = build_model(TINY).eval()
    with pytest.raises(ValueError, match="divisible by 4"):
        a(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"in_size 32 needs H and W >= 16.*\(8, 16\)"):
        a(torch.rand(1, 3, 8, 16))
    assert a(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)  # the smallest size: 2x2 hourglass bottoms


def test_released_key_names_and_shapes_round_trip() -> None:
    """Names and shapes written by hand from Face-SPARNet models/sparnet.py and blocks.py (default SPARNet)."""
    torch.manual_seed(0)
    net = build_model({"name": "sparnet"})
    theirs = to_released(net.state_dict(), "sparnet", 32)
    expected = {
        "encoder.0.conv2d.weight": (32, 3, 3, 3),
        "encoder.1.shortcut_func.conv2d.bias": (64,),
        "encoder.1.preact_func.0.norm.running_var": (32,),
        "encoder.1.conv1.conv2d.weight": (64, 32, 3, 3),
        "encoder.1.conv1.norm.norm.weight": (64,),
        "encoder.1.att_func.b1_4.conv2d.weight": (64, 64, 3, 3),
        "encoder.1.att_func.b2_plus_1.norm.norm.bias": (64,),
        "encoder.1.att_func.out_block.0.conv2d.weight": (1, 64, 3, 3),
        "encoder.3.att_func.b3_2.conv2d.weight": (64, 64, 3, 3),
        "res_layers.9.conv2.conv2d.weight": (128, 128, 3, 3),
        "decoder.2.conv1.conv2d.weight": (32, 64, 3, 3),  # their n_ch is 256 unclipped after 3 downs
        "decoder.2.att_func.b1_5.conv2d.weight": (64, 32, 3, 3),
        "out_conv.conv2d.bias": (3,),
    }
    assert {k: tuple(theirs[k].shape) for k in expected} == expected
    assert "encoder.3.att_func.b1_3.conv2d.weight" not in theirs and len(theirs) == len(net.state_dict())
    other = build_model({"name": "sparnet"})
    other.load_state_dict(to_ours(theirs, "sparnet", other, 32))
    ours = net.state_dict()
    for key, value in other.state_dict().items():
        assert torch.equal(value, ours[key]), key
    with pytest.raises(ValueError, match="1 released key.s. missing"):
        to_ours({k: v for k, v in theirs.items() if k != "out_conv.conv2d.bias"}, "sparnet", other, 32)
