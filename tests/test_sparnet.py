"""SPARNet-style CNN baseline: shapes, attention range, size class, state-dict round trip."""

import pytest
import torch

from model.registry import build_model
from model.sparnet import FaceAttentionUnit, HourglassAttention

TINY = {"name": "sparnet", "min_ch": 8, "max_ch": 16, "in_size": 32, "min_feat_size": 8, "res_depth": 1}


def test_forward_shape_non_square_and_gradients() -> None:
    net = build_model(TINY)
    x = torch.rand(2, 3, 32, 48)
    y = net(x)
    assert y.shape == x.shape
    y.mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_attention_map_is_in_unit_interval_with_requested_channels() -> None:
    att = HourglassAttention(c_in=8, c_attn=1, depth=2, c_mid=8)
    a = att(torch.randn(2, 8, 12, 20))
    assert a.shape == (2, 1, 12, 20)
    assert (a > 0).all() and (a < 1).all()


def test_fau_scales_and_attention_gates_residual() -> None:
    assert FaceAttentionUnit(8, 16, "down", 1)(torch.randn(1, 8, 16, 16)).shape == (1, 16, 8, 8)
    assert FaceAttentionUnit(16, 8, "up", 1)(torch.randn(1, 16, 8, 8)).shape == (1, 8, 16, 16)
    fau = FaceAttentionUnit(8, 8, "none", 1).eval()
    torch.nn.init.constant_(fau.attention.out[0][0].weight, 0.0)
    torch.nn.init.constant_(fau.attention.out[0][0].bias, -100.0)  # map ~ 0: the block is the identity
    x = torch.randn(1, 8, 8, 8)
    assert torch.allclose(fau(x), x, atol=1e-6)


def test_default_size_is_the_published_class() -> None:
    net = build_model({"name": "sparnet"})
    params = sum(p.numel() for p in net.parameters())
    assert 10.0e6 < params < 11.0e6  # SPARNet is listed as 10.6M in the x8 tables


def test_state_dict_round_trip_and_size_error() -> None:
    a, b = build_model(TINY).eval(), build_model(TINY).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    with pytest.raises(ValueError, match="divisible by 4"):
        a(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"in_size 32 needs H and W >= 16.*\(8, 16\)"):
        a(torch.rand(1, 3, 8, 16))
    assert a(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)  # the smallest size: 2x2 hourglass bottoms
