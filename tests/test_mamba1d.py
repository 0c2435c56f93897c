"""Plain 1-D Mamba mixer: causal conv paths and raster-order causality."""

import pytest
import torch

from model.mamba1d import Mamba1D, _causal_conv1d_cuda, causal_conv1d, causal_conv1d_torch


def _loop_causal_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    batch, dim, length = x.shape
    width = w.shape[1]
    out = torch.zeros_like(x)
    for t in range(length):
        for k in range(width):
            src = t - (width - 1) + k
            if src >= 0:
                out[:, :, t] += w[:, k] * x[:, :, src]
    return torch.nn.functional.silu(out + b[None, :, None])


def test_torch_causal_conv_matches_loop() -> None:
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 5, 11), torch.randn(5, 4), torch.randn(5)
    assert torch.allclose(causal_conv1d_torch(x, w, b), _loop_causal_conv(x, w, b), atol=1e-6)
    assert torch.equal(causal_conv1d(x, w, b), causal_conv1d_torch(x, w, b))  # CPU takes the torch path


@pytest.mark.skipif(
    not (torch.cuda.is_available() and _causal_conv1d_cuda() is not None),
    reason="causal_conv1d CUDA kernel needs a GPU and the causal-conv1d package (requirements-cuda.txt)",
)
def test_cuda_kernel_matches_torch_path() -> None:
    x, w, b = torch.randn(2, 64, 257, device="cuda"), torch.randn(64, 4, device="cuda"), torch.randn(64, device="cuda")
    assert torch.allclose(causal_conv1d(x, w, b), causal_conv1d_torch(x, w, b), rtol=6e-4, atol=2e-3)


def test_mamba1d_is_causal_in_raster_order() -> None:
    torch.manual_seed(0)
    block = Mamba1D(d_model=8, d_state=4, expand=2.0)
    x = torch.randn(1, 4, 5, 8)
    y = block(x)
    x2 = x.clone()
    x2[:, 2, 3] += 1.0  # perturb raster position 2*5+3 = 13
    y2 = block(x2).reshape(1, 20, 8)
    y = y.reshape(1, 20, 8)
    assert torch.allclose(y[:, :13], y2[:, :13], atol=1e-6)
    assert not torch.allclose(y[:, 13:], y2[:, 13:])


def test_mamba1d_gradients_reach_every_parameter() -> None:
    block = Mamba1D(d_model=8, d_state=4)
    block(torch.randn(2, 3, 4, 8)).square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
