"""Activation memory and time of ``train.grad_checkpoint: none`` vs ``blocks`` for the paper networks.

    .venv/bin/python -m bench.grad_checkpoint [--models hybrimamba rhmc] [--size 128] [--repeats 3]

Builds each network from its paper config (configs/<model>_x8_celeba.yaml) and, for one training
forward of a ``size`` x ``size`` image (batch 1, L1 loss), counts the bytes held for the backward:
every distinct storage autograd saves (``torch.autograd.graph.saved_tensors_hooks``; parameters
left out) plus the inputs each checkpointed block keeps for its recompute (inside a checkpointed
block the checkpoint's own hooks replace ours, so what it frees is not counted). Then times
forward + backward (median of ``--repeats``, after one warm-up) with each setting.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml
from torch import nn

from bench.timing import fmt_time, median_time
from model.build import build_network
from utils.cli import ArgumentParser
from utils.grad_checkpoint import enable_grad_checkpoint

REPO = Path(__file__).resolve().parents[1]


def saved_activation_bytes(net: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter storages one training forward + loss of ``net`` holds for the backward."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    held: dict[int, int] = {}

    def keep(t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and storage.nbytes():
            held[storage.data_ptr()] = storage.nbytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        keep(t)
        return t

    def block_inputs(module: nn.Module, args: tuple) -> None:
        if "forward" in module.__dict__ and module.training and torch.is_grad_enabled():  # a checkpointed block
            for a in args:
                if isinstance(a, torch.Tensor):
                    keep(a)

    hooks = [m.register_forward_pre_hook(block_inputs) for m in net.modules()]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = (net(x) - x).abs().mean()
    finally:
        for h in hooks:
            h.remove()
    del loss
    return sum(held.values())


def train_step(net: nn.Module, x: torch.Tensor) -> None:
    net.zero_grad(set_to_none=True)
    (net(x) - x).abs().mean().backward()


def paper_network(model: str, mode: str) -> nn.Module:
    cfg = yaml.safe_load((REPO / "configs" / f"{model}_x8_celeba.yaml").read_text())["model"]
    torch.manual_seed(0)
    net = build_network({"model": cfg, "ssm": {"backend": "auto"}}).train()
    enable_grad_checkpoint(net, mode)
    return net


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["hybrimamba", "rhmc"])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    x = torch.rand(1, 3, args.size, args.size)
    print(f"batch 1, {args.size}x{args.size}, fp32, CPU, {torch.get_num_threads()} threads")
    print(f"{'model':<12}{'grad_checkpoint':<17}{'blocks':>7}{'saved MiB':>11}{'fwd+bwd':>11}")
    for name in args.models:
        base = None
        for mode in ("none", "blocks"):
            net = paper_network(name, mode)
            blocks = sum("forward" in m.__dict__ for m in net.modules())
            mib = saved_activation_bytes(net, x) / 2**20

            t = median_time(lambda net=net: train_step(net, x), x.device, args.repeats, warmup=True)
            base = base or (mib, t)
            ratio = f"  ({mib / base[0]:.2f}x memory, {t / base[1]:.2f}x time)" if mode != "none" else ""
            print(f"{name:<12}{mode:<17}{blocks:>7}{mib:>11.1f}{fmt_time(t):>11}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
