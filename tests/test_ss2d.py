"""SS2D: shapes, gradients, the exact 4-direction merge, stable state-dict keys."""

import pytest
import torch
from torch import nn

import model.ssm as ssm
from model.ss2d import SS2D, cross_merge, cross_scan


def test_cross_scan_orders_and_merge_inverts() -> None:
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    xs = cross_scan(x)
    assert xs.shape == (1, 4, 2, 12)
    assert xs[0, 0, 0].tolist() == list(range(12))  # row-major
    assert xs[0, 1, 0].tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]  # column-major
    assert xs[0, 2, 0].tolist() == list(range(11, -1, -1))
    assert xs[0, 3, 0].tolist() == [11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0]
    assert torch.equal(cross_merge(xs, 3, 4), 4 * x)


def test_merged_core_of_identity_scan_is_four_times_input(monkeypatch: pytest.MonkeyPatch) -> None:
    def identity_scan(u, *args, **kwargs):
        return u

    monkeypatch.setattr(ssm, "selective_scan", identity_scan)  # the composed core: cross_scan, scan, merge
    block = SS2D(d_model=8, d_state=4, expand=1.5)
    x = torch.randn(2, block.d_inner, 5, 7)
    assert torch.allclose(block.forward_core(x), 4 * x)


def test_output_shape_and_gradients_non_square() -> None:
    torch.manual_seed(0)
    block = SS2D(d_model=8, d_state=4, expand=2.0)
    x = torch.randn(2, 6, 10, 8, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_hooks_run_in_their_places() -> None:
    seen = {}

    class Record(nn.Module):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            seen[self.key] = t.shape
            return t

    block = SS2D(d_model=8, d_state=4, expand=1.5, pre_conv=Record("pre"), post_scan=Record("post"))
    block(torch.randn(1, 4, 6, 8))
    assert seen == {"pre": (1, 12, 4, 6), "post": (1, 12, 4, 6)}


def test_initialisation_and_state_dict_keys() -> None:
    block = SS2D(d_model=16, d_state=8, expand=2.0)
    assert block.dt_rank == 1
    assert sorted(block.state_dict()) == [
        "A_logs",
        "Ds",
        "conv2d.bias",
        "conv2d.weight",
        "dt_projs_bias",
        "dt_projs_weight",
        "in_proj.weight",
        "out_norm.bias",
        "out_norm.weight",
        "out_proj.weight",
        "x_proj_weight",
    ]
    assert block.A_logs.shape == (4 * 32, 8)
    assert torch.allclose(block.A_logs[5].exp(), torch.arange(1, 9, dtype=torch.float32))
    assert torch.equal(block.Ds, torch.ones(128))
    dt = torch.nn.functional.softplus(block.dt_projs_bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6
    assert block.A_logs._no_weight_decay and block.Ds._no_weight_decay
