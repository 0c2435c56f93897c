"""Every registered network (read from the registry, spandrel-style): output shape for the input the pipeline
feeds it, finite gradients to every parameter, state-dict round trip, bf16 autocast forward on CPU.

Tiny options come from tests/helpers/tiny.py (one entry per network); what is specific to one architecture
stays in its own file (tests/test_<name>.py).
"""

import io
import re

import pytest
import torch

from tests.helpers.tiny import HR, SCALE, TINY, build_tiny, network_input, registered, tiny_entry

BF16_RTOL = 0.05  # relative RMS error: bf16 keeps 8 mantissa bits (2^-8 a rounding) over 10-40 layers here

pytestmark = pytest.mark.usefixtures("single_thread")
NAMES = registered()


def outputs(out: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A network's outputs by name (train-mode networks with auxiliary outputs return a dict, else the SR)."""
    return out if isinstance(out, dict) else {"sr": out}


def test_the_table_names_only_registered_networks() -> None:
    assert not set(TINY) - set(NAMES), f"tests/helpers/tiny.py has entries for unregistered {set(TINY) - set(NAMES)}"
    with pytest.raises(
        pytest.fail.Exception, match=r"'new_net' is registered but has no entry .* add its tiny options"
    ):
        tiny_entry("new_net")  # what every test below says for a network added without an entry


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_for_the_pipeline_input(name: str) -> None:
    """16x16 LR -> 128x128 for ``lr_input`` networks, the 128x128 upsampling -> 128x128 for the others."""
    net = build_tiny(name).eval()
    x = network_input(net, (HR, HR), batch=1)
    assert x.shape[-1] == (HR // SCALE if getattr(net, "lr_input", False) else HR)
    with torch.no_grad():
        y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (1, 3, HR, HR) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    """Train mode, as train.py steps: every declared output, a random upstream gradient on each (a flat one
    vanishes through normalisations); every parameter gets a finite gradient, non-zero unless the table says why."""
    entry = tiny_entry(name)
    net = build_tiny(name).train()
    out = outputs(net(network_input(net, entry.size)))
    assert set(out) == set(getattr(net, "training_outputs", ("sr",)))
    assert out["sr"].shape == (2, 3, *entry.size)
    g = torch.Generator().manual_seed(1)
    sum((y * torch.randn(y.shape, generator=g)).sum() for y in out.values()).backward()
    silent = []
    for key, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
        if not p.grad.any() and not getattr(p, "_placeholder", False):
            silent.append(key)
    unexplained = [key for key in silent if not (entry.silent and re.search(entry.silent, key))]
    assert not unexplained, (
        f"{name}: zero gradient for {unexplained} (allowed by tests/helpers/tiny.py: {entry.silent!r})"
    )


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str) -> None:
    """Saved (after a train-mode pass, so running statistics are not the initial ones), loaded into a fresh
    build with other initial weights: the same state and bitwise the same output."""
    entry = tiny_entry(name)
    a = build_tiny(name, seed=0)
    x = network_input(a, entry.size)
    with torch.no_grad():
        a.train()(x)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = build_tiny(name, seed=1)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    saved, loaded = a.state_dict(), b.state_dict()
    assert saved.keys() == loaded.keys()
    for key, value in saved.items():
        assert torch.equal(value, loaded[key]), key
    with torch.no_grad():
        y = a.eval()(x)
        assert y.shape == (2, 3, *entry.size)
        assert torch.equal(y, b.eval()(x))


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # CPU rms_norm: the unfused path
@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_forward(name: str) -> None:
    """CPU autocast to bfloat16: finite, the fp32 output within BF16_RTOL (relative RMS)."""
    entry = tiny_entry(name)
    net = build_tiny(name).eval()
    x = network_input(net, entry.size)
    with torch.no_grad():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
    assert y.shape == reference.shape and torch.isfinite(y).all()
    error = float((y.float() - reference).norm() / reference.norm().clamp_min(1e-12))
    assert error <= BF16_RTOL, f"{name}: bf16 relative RMS error {error:.3g} > {BF16_RTOL}"
