"""train.grad_checkpoint=blocks (utils.grad_checkpoint): the same gradients and BatchNorm statistics with fewer
saved activations, for HybriMamba and RHMC at tiny widths; eval, EMA copies, compile and train.py use it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from test_train import run_log, write_config
from torch import nn

import train
from bench.grad_checkpoint import saved_activation_bytes, train_step
from model.registry import build_model
from utils.grad_checkpoint import enable_grad_checkpoint

TINY = {
    "hybrimamba": {"name": "hybrimamba", "embed_dim": 8, "depth": 1, "n_layers": 1, "d_state": 4},
    "rhmc": {"name": "rhmc", "embed_dim": 4, "depth": 1, "d_state": 4},
}


def pair(name: str) -> tuple[nn.Module, nn.Module]:
    nets = []
    for mode in ("none", "blocks"):
        torch.manual_seed(0)
        net = build_model(TINY[name]).train()
        enable_grad_checkpoint(net, mode)
        nets.append(net)
    return nets[0], nets[1]


@pytest.mark.parametrize("name", ["hybrimamba", "rhmc"])
def test_same_gradients_and_statistics_with_fewer_saved_bytes(name: str, single_thread) -> None:
    plain, ckpt = pair(name)
    blocks = sum("forward" in m.__dict__ for m in ckpt.modules())
    assert blocks == {"hybrimamba": 14, "rhmc": 9}[name]  # 7 stages x (MambaStack, LEM); 9 stages x 1 HMCB
    x = torch.rand(2, 3, 16, 16)
    for net in (plain, ckpt):
        train_step(net, x)
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-6, msg=key)
    for (key, a), b in zip(plain.named_buffers(), ckpt.buffers()):  # BatchNorm updated once, not twice
        assert torch.equal(a, b), key
    assert plain.state_dict().keys() == ckpt.state_dict().keys()
    full, saved = saved_activation_bytes(plain, x), saved_activation_bytes(ckpt, x)
    assert saved < 0.5 * full, (saved, full)
    ckpt.eval()
    with torch.no_grad():
        torch.testing.assert_close(ckpt(x), plain.eval()(x), rtol=0, atol=0)


def test_ema_copy_and_dropout_replay() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.drop = nn.Conv2d(3, 3, 3, padding=1), nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.drop(self.conv(x))

    class Net(nn.Sequential):
        checkpoint_blocks = (Block,)

    torch.manual_seed(0)
    plain = Net(Block(), Block())
    ckpt = copy.deepcopy(plain)
    assert enable_grad_checkpoint(ckpt, "blocks") == 2
    x = torch.rand(1, 3, 8, 8)
    for net in (plain, ckpt):
        torch.manual_seed(1)
        train_step(net, x)
    for p, q in zip(plain.parameters(), ckpt.parameters()):
        assert torch.equal(p.grad, q.grad)  # the recompute draws the forward's dropout mask
    copied = copy.deepcopy(ckpt)  # what ModelEMA does: the copy recomputes its own blocks
    assert copied[0].forward.__self__ is copied[0]


def test_nested_blocks_are_wrapped_once_and_undeclared_networks_are_refused() -> None:
    class Net(nn.Sequential):
        checkpoint_blocks = (nn.Sequential, nn.Linear)

    net = Net(nn.Sequential(nn.Linear(2, 2)), nn.Linear(2, 2))
    assert enable_grad_checkpoint(net, "blocks") == 2  # net[0] and net[1], not net[0][0]
    assert "forward" not in net[0][0].__dict__
    assert enable_grad_checkpoint(nn.Linear(2, 2), "none") == 0
    with pytest.raises(ValueError, match="Linear declares no repeated blocks to recompute"):
        enable_grad_checkpoint(nn.Linear(2, 2), "blocks")


def test_compiled_checkpointed_blocks_match_eager() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.nn.functional.gelu(self.bn(self.conv(x)))

    class Net(nn.Sequential):
        checkpoint_blocks = (Block,)

    torch.manual_seed(0)
    plain = Net(Block(), Block())
    ckpt = copy.deepcopy(plain)
    enable_grad_checkpoint(ckpt, "blocks")
    x = torch.randn(2, 4, 8, 8)
    train_step(plain, x)
    train_step(torch.compile(ckpt, backend="aot_eager", fullgraph=True), x)  # no graph break
    for p, q in zip(plain.parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-6)
    for a, b in zip(plain.buffers(), ckpt.buffers()):
        assert torch.equal(a, b)


def test_train_py_checkpoints_blocks_or_names_the_network(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path, train={"iterations": 2}, logging={"val_every": 2, "save_every": 2})
    tiny = [f"model={{{', '.join(f'{k}: {v}' for k, v in TINY['hybrimamba'].items())}}}"]
    assert train.main(["--config", str(cfg), "--set", *tiny, "train.grad_checkpoint=blocks"]) == 0
    assert "grad_checkpoint blocks (14 blocks)" in run_log(tmp_path)
    bicubic = ["name=other", "model={name: bicubic}", "train.grad_checkpoint=blocks"]
    assert train.main(["--config", str(cfg), "--set", *bicubic]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(err) == 1 and "Bicubic declares no repeated blocks" in err[0], err
