"""WFEN (generic checks: test_models.py): Haar transform, the released window-1 shift, init, counts against Table 1."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from metrics.complexity import count_parameters
from model import build_model
from model.wfen import FDT, Haar, LocalAttention

TINY = {"name": "wfen", "min_ch": 8, "res_depth": 2}

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**kwargs):
    torch.manual_seed(0)
    return build_model({**TINY, **kwargs})


def test_size_error_names_the_constraint() -> None:
    with pytest.raises(ValueError, match=r"divisible by 32.*\(48, 64\)"):
        tiny()(torch.rand(1, 3, 48, 64))


def test_haar_bands_and_exact_inverse() -> None:
    haar = Haar(2)
    x = torch.randn(1, 2, 8, 6)
    bands = haar(x)
    assert bands.shape == (1, 8, 4, 3)
    a = bands[:, :2]  # band-major: [A, H, V, D] each over the 2 channels
    assert torch.allclose(a, torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)  # analysis / 4: A is the 2x2 mean
    assert torch.allclose(haar.inverse(bands), x, atol=1e-5)
    constant = haar(torch.full((1, 2, 4, 4), 3.0))
    assert torch.allclose(constant[:, 2:], torch.zeros(1, 6, 2, 2))  # no detail in a flat map


def test_window_one_shift_rolls_without_rolling_back() -> None:
    """Released arithmetic: roll by -1 // 2 = -1 in, by 1 // 2 = 0 out; per-pixel attention commutes with the roll."""
    torch.manual_seed(0)
    plain, shifted = LocalAttention(8, 1, False), LocalAttention(8, 1, True)
    shifted.load_state_dict(plain.state_dict())
    x = torch.randn(1, 8, 6, 6)
    assert torch.allclose(shifted(x), plain(torch.roll(x, (-1, -1), (2, 3))), atol=1e-6)
    wide = LocalAttention(8, 2, True)  # window 2: rolled by -1 then back by +1
    assert (wide.roll_in, wide.roll_out) == (-1, 1)


def test_released_initialisation_switch() -> None:
    released, default = tiny(), tiny(init_std=None)
    weights = torch.cat([m.weight.detach().flatten() for m in released.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(weights.std()) - 0.02) < 0.002 and all(
        float(m.bias.detach().abs().max()) == 0
        for m in released.modules()
        if isinstance(m, torch.nn.Conv2d) and m.bias is not None
    )
    assert float(default.first_conv.weight.detach().std()) > 0.05  # PyTorch's kaiming-uniform for a 27-input conv


def test_fdt_keeps_shape_with_window_and_heads() -> None:
    block = FDT(16, 4, True, 4)
    assert block(torch.randn(2, 16, 8, 12)).shape == (2, 16, 8, 12)


def test_state_dict_has_no_fixed_filters() -> None:
    assert not any("filters" in k for k in tiny().state_dict())  # the Haar filters are constants, not weights


def test_counts_match_table_1() -> None:
    """6.8M / 7.5G: parameters, and thop-style MACs at the 128x128 input (convolutions only: the
    7.49G conv MACs are the printed 7.5G; with the attention matmuls ours is 8.09G)."""
    with torch.device("meta"):
        net = build_model({"name": "wfen"})
    assert abs(count_parameters(net) / 6.8e6 - 1) < 0.03
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # what metrics.complexity counts
        net.eval()(torch.empty(1, 3, 128, 128, device="meta"))
    assert abs(counter.get_total_flops() / 2 / 7.5e9 - 1) < 0.15
    conv_macs = counter.get_flop_counts()["Global"][torch.ops.aten.convolution] / 2
    assert abs(conv_macs / 7.5e9 - 1) < 0.01
