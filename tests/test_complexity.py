"""Complexity: hand-counted FLOPs of convs / projections, selective-scan FLOPs, latency, script."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metrics.complexity import count_flops, count_parameters, main, measure_latency, model_config, profile
from model.registry import MODEL_REGISTRY, register_model
from model.ss2d import SS2D
from model.ssm import scan_flops

D_MODEL, D_STATE, DT_RANK = 4, 3, 2


class TinySS2D(nn.Module):
    """conv 3->d, SS2D on tokens, conv d->3: every counted op is known by hand.

    dt_rank=2: with rank 1 torch lowers the dt einsum to a broadcast multiply that
    FlopCounterMode does not see (2 * 4 * Di * L FLOPs, negligible in real widths).
    """

    def __init__(self, d_model: int = D_MODEL, d_state: int = D_STATE) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, d_model, 3, padding=1)
        self.ss2d = SS2D(d_model, d_state=d_state, dt_rank=DT_RANK)
        self.tail = nn.Conv2d(d_model, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x).permute(0, 2, 3, 1)
        return x + self.tail(self.ss2d(f).permute(0, 3, 1, 2))


@pytest.fixture
def tiny_name():
    name = "tiny_ss2d_complexity_test"
    register_model(name)(TinySS2D)
    yield name
    MODEL_REGISTRY.pop(name)


def test_bicubic_has_no_flops():
    from model import build_model

    net = build_model({"name": "bicubic"})
    assert count_parameters(net) == 0  # its dummy scalar is a placeholder, not a weight
    assert count_flops(net, (16, 16)) == {"op_flops": 0, "scan_flops": 0, "flops": 0, "macs": 0}


def test_conv_flops_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 2, 1))
    h, w = 12, 10
    assert count_flops(net, (h, w), batch=2)["op_flops"] == 2 * 2 * h * w * (5 * 3 * 9 + 2 * 5)


def test_ss2d_ops_and_scan_by_hand():
    torch.manual_seed(0)
    net = TinySS2D()
    h, w = 8, 6
    length, d, di, n, r, k = h * w, D_MODEL, 2 * D_MODEL, D_STATE, DT_RANK, 4
    ops = (
        2
        * length
        * (
            d * 3 * 9  # head conv
            + d * 2 * di  # in_proj
            + di * 9  # depthwise conv
            + k * (r + 2 * n) * di  # x_proj over 4 directions
            + k * di * r  # dt_proj
            + di * d  # out_proj
            + 3 * d * 9  # tail conv
        )
    )
    scan = 9 * (k * di) * length * n + 2 * (k * di) * length  # with D, without z
    got = count_flops(net, (h, w))
    assert got["op_flops"] == ops
    assert got["scan_flops"] == scan == scan_flops(1, k * di, length, n, has_d=True, has_z=False)
    assert got["flops"] == ops + scan and got["macs"] == (ops + scan) // 2


def test_latency_positive():
    lat = measure_latency(TinySS2D(), (8, 8), "cpu", warmup=1, repeats=3)
    assert 0 < lat["median_ms"] < 10_000 and lat["mean_ms"] > 0 and lat["repeats"] == 3


def test_latency_defaults_few_repeats_with_a_bar(capsys):
    calls = []

    class Counting(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return x

    lat = measure_latency(Counting(), (4, 4), "cpu", progress=True)
    assert len(calls) == 4 and lat["repeats"] == 3  # 1 warm-up + 3 timed by default
    err = capsys.readouterr().err
    assert "timing on cpu" in err and "4/4" in err
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency(Counting(), (4, 4), "cpu", repeats=0)


def test_registered_model_profile_and_script(tiny_name, capsys, tmp_path):
    report = profile({"name": tiny_name}, (8, 8), ("cpu",), warmup=1, repeats=2)
    assert report["params"] == count_parameters(TinySS2D())
    assert report["scan_flops"] > 0 and "latency_cpu" in report
    out = main(["--model", tiny_name, "--size", "8", "8", "--device", "cpu", "--warmup", "1", "--repeats", "2"])
    text = capsys.readouterr().out
    assert "MACs" in text and "selective scan" in text and out["flops"] == report["flops"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: bicubic}\n")
    assert model_config(None, str(cfg)) == {"name": "bicubic"}
    with pytest.raises(ValueError, match="builds model 'bicubic'"):
        model_config(tiny_name, str(cfg))
