"""Plain 1-D Mamba: causal conv paths, raster-order causality, and the mamba1d U-Net baseline."""

import pytest
import torch

from model.hybrimamba import HybriMamba, HybriMambaUNet, MambaBlock
from model.mamba1d import Mamba1D, Mamba1DUNet, _causal_conv1d_cuda, causal_conv1d, causal_conv1d_torch
from model.registry import build_model


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


def tiny_unet(**kwargs) -> Mamba1DUNet:
    torch.manual_seed(0)
    return Mamba1DUNet(**{"embed_dim": 4, "depth": 1, "n_layers": 1, "d_state": 4, **kwargs})


def test_mamba1d_unet_is_hybrimamba_shape_with_mamba1d_mixers() -> None:
    net = build_model({"name": "mamba1d", "embed_dim": 4, "depth": 1, "n_layers": 1, "d_state": 4})
    assert isinstance(net, HybriMambaUNet)
    mixers = [m for m in net.modules() if isinstance(m, Mamba1D)]
    assert len(mixers) == 7 and not any(isinstance(m, MambaBlock) for m in net.modules())  # 7 stages x 1 x 1
    hm = HybriMamba(embed_dim=4, depth=1, n_layers=1, d_state=4)
    non_mixer = {k for k in hm.state_dict() if ".blocks." not in k}
    assert non_mixer == {k for k in net.state_dict() if ".blocks." not in k}  # same U-shape, LEMs, norms, head, tail
    assert net(torch.rand(2, 3, 16, 24)).shape == (2, 3, 16, 24)
    with pytest.raises(ValueError, match="Mamba1DUNet needs H and W divisible by 4"):
        net(torch.rand(1, 3, 16, 18))


def test_mamba1d_unet_keeps_mamba_dt_initialisation() -> None:
    net = tiny_unet()
    for block in (m for m in net.modules() if isinstance(m, Mamba1D)):
        dt = torch.nn.functional.softplus(block.dt_proj_bias)
        assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6  # the U-Net's Linear re-init must not reach it
