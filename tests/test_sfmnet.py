"""SFMNet (generic checks: test_models.py): training outputs, shared attention, FreBlock / FFT losses against
closed forms, counts.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from metrics.complexity import count_parameters
from model import build_model
from model.losses import LOSS_REGISTRY, WeightedLoss
from model.sfmnet import FreBlock

TINY = {"name": "sfmnet", "dim": 8, "n_resblocks": 1}

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**kwargs):
    torch.manual_seed(0)
    return build_model({**TINY, **kwargs})


def test_training_outputs_and_size_error() -> None:
    net = tiny()
    x = torch.rand(1, 3, 32, 48)  # the bicubic upsampling of LR faces
    out = net.train()(x)
    assert set(out) == set(net.training_outputs) == {"sr", "fre"}
    assert out["sr"].shape == out["fre"].shape == x.shape
    with pytest.raises(ValueError, match=r"divisible by 8.*\(60, 64\)"):
        net(torch.rand(1, 3, 60, 64))


@pytest.mark.parametrize("shared", [False, True])
def test_gradients_reach_every_used_parameter(shared: bool) -> None:
    net = tiny(shared_fsib_attention=shared).train()
    out = net(torch.rand(1, 3, 32, 32))
    (out["sr"].mean() + out["fre"].mean()).backward()
    for name, p in net.named_parameters():  # every built parameter is used (DDP needs no unused-parameter search)
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    released_size = sum(p.numel() for p in tiny().parameters()) - 14 * sum(
        p.numel() for p in net.fsib[0].fre_att.parameters()
    )
    assert (sum(p.numel() for p in net.parameters()) == released_size) == shared  # 14 FSIBs, one attention fewer


def test_freblock_with_identity_convs_is_abs_plus_input() -> None:
    """pre/post = identity, amplitude / phase convs zero: |irfft2(rfft2(x))| + x = 2x for x >= 0."""
    block = FreBlock(4)
    with torch.no_grad():
        for conv in (block.pre, block.post):
            conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
            conv.bias.zero_()
        for seq in (block.amp, block.pha):
            for m in seq:
                if isinstance(m, torch.nn.Conv2d):
                    m.weight.zero_()
                    m.bias.zero_()
    x = torch.rand(2, 4, 8, 6)
    assert torch.allclose(block(x), 2 * x, atol=1e-4)


def test_fft_losses_separate_amplitude_and_phase() -> None:
    """A circular shift changes only the phase of the spectrum."""
    x = torch.rand(1, 3, 16, 16)
    shifted = torch.roll(x, (3, 5), (2, 3))
    amp, pha = LOSS_REGISTRY["fft_amplitude_l1"](), LOSS_REGISTRY["fft_phase_l1"]()
    assert amp(shifted, x) < 1e-4 and pha(shifted, x) > 0.1
    assert amp(2 * x, x) > 0.1 and pha(2 * x, x) < 1e-5


def test_released_recipe_losses_read_the_frequency_output() -> None:
    loss = WeightedLoss(
        [
            {"type": "l1"},
            {"type": "l1", "output": "fre"},
            {"type": "fft_amplitude_l1", "output": "fre", "weight": 0.01},
            {"type": "fft_phase_l1", "output": "fre", "weight": 0.01},
        ]
    )
    hr = torch.rand(1, 3, 8, 8)
    total, parts = loss({"sr": hr, "fre": hr + 0.5}, {"hr": hr})
    assert parts["l1"] == 0 and abs(parts["l1:fre"] - 0.5) < 1e-6
    assert loss.outputs == {"sr", "fre"} and loss.targets == {"hr"}
    assert abs(float(total) - (0.5 + 0.01 * parts["fft_amplitude_l1:fre"] + 0.01 * parts["fft_phase_l1:fre"])) < 1e-5


def test_counts_match_table_1() -> None:
    """8.6M / 30.6G: parameters (ours 8.80M, +2.3%) and thop-style MACs at 128x128 (30.57G conv MACs)."""
    with torch.device("meta"):
        net = build_model({"name": "sfmnet"}).eval()
    assert abs(count_parameters(net) / 8.6e6 - 1) < 0.03
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.empty(1, 3, 128, 128, device="meta"))
    assert abs(counter.get_total_flops() / 2 / 30.6e9 - 1) < 0.15
    conv_macs = counter.get_flop_counts()["Global"][torch.ops.aten.convolution] / 2
    assert abs(conv_macs / 30.6e9 - 1) < 0.01
