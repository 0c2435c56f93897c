"""Tiny options for every registered network: the one table tests/test_models.py builds them from.

A network added to the registry needs an entry here (tests/test_models.py fails naming it otherwise).
``options``: constructor keywords with tiny widths (every other keyword at its default). ``size``: the HR
(H, W) of the small checks (gradients, state-dict round trip, bf16); the network's input is that size,
or size / SCALE for ``lr_input`` networks, as train.py and test.py feed them. ``silent``: a regex of the
parameters allowed an exactly-zero gradient at this initialisation, and why; every other parameter must
get a finite, non-zero one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from model import MODEL_REGISTRY, list_models
from model.build import build_network

SCALE = 8  # the framework's x8: 16x16 LR -> 128x128 HR
HR = 128
DEAD_SQUEEZE = "its squeeze-excitation's narrow ReLU bottleneck starts dead on this batch (no gradient through it)"


@dataclass(frozen=True)
class Tiny:
    options: dict[str, Any] = field(default_factory=dict)
    size: tuple[int, int] = (16, 24)
    silent: str = ""
    why_silent: str = ""


TINY: dict[str, Tiny] = {
    "bicubic": Tiny(),
    "dic": Tiny({"dim": 8, "n_steps": 2, "groups": 2, "hg_dim": 16, "n_fusion": 1}, size=(64, 128)),
    "hybrimamba": Tiny(
        {"embed_dim": 8, "depth": 1, "n_layers": 1, "d_state": 4},
        silent=r"\.attention\.squeeze\.",
        why_silent=DEAD_SQUEEZE,
    ),
    "mamba1d": Tiny(
        {"embed_dim": 4, "depth": 1, "n_layers": 1, "d_state": 4},
        size=(8, 16),
        silent=r"\.attention\.squeeze\.",
        why_silent=DEAD_SQUEEZE,
    ),
    "mambair": Tiny(
        {"embed_dim": 30, "depths": (1, 2), "d_state": 2, "drop_path_rate": 0.0},  # no drop path: every block learns
        size=(64, 64),
        silent=r"\.cab\.cab\.3\.attention\.",
        why_silent=DEAD_SQUEEZE,
    ),
    "rhmc": Tiny(
        {"embed_dim": 4, "depth": 2, "d_state": 4},
        size=(16, 32),
        silent=r"\.fam\.channel_gate\.|\.rmoe\.expert1\.0\.bias",
        why_silent=f"FAM: {DEAD_SQUEEZE}; RMoE's expert1 conv bias is cancelled by the train-mode BatchNorm after it",
    ),
    "sfmnet": Tiny({"dim": 16, "n_resblocks": 1}, size=(32, 48)),  # dim 16: two channels for each of the 8 heads
    "sparnet": Tiny({"min_ch": 8, "max_ch": 16, "in_size": 32, "min_feat_size": 8, "res_depth": 1}, size=(32, 48)),
    "swinir": Tiny(
        {
            "embed_dim": 12,
            "depths": (2, 2),
            "num_heads": (2, 3),
            "window_size": 4,
            "img_size": 16,
            "drop_path_rate": 0.0,
        },
        size=(64, 64),
    ),
    # PyTorch's init: under the released N(0, 0.02) the deepest gradients underflow to 0 (see test_wfen.py)
    "wfen": Tiny({"min_ch": 8, "res_depth": 2, "init_std": None}, size=(32, 64)),
}


def tiny_entry(name: str) -> Tiny:
    """The table's entry for ``name``; a registered network without one fails the test, saying what to add."""
    if name not in TINY:
        pytest.fail(
            f"model {name!r} is registered but has no entry in tests/helpers/tiny.py TINY: add its tiny options "
            "(constructor keywords with small widths) and the HR size of the small checks",
            pytrace=False,
        )
    return TINY[name]


def build_tiny(name: str, seed: int = 0, **overrides: Any) -> nn.Module:
    """``name`` at its tiny options (plus ``overrides``), built as the entry points build it (``build_network``)."""
    torch.manual_seed(seed)
    return build_network({"model": {"name": name, **tiny_entry(name).options, **overrides}})


def network_input(net: nn.Module, hr: tuple[int, int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A batch in [0, 1] as the pipeline feeds ``net`` for an HR of ``hr``: the LR itself for ``lr_input``
    networks (train.py's ``lr_small``), else its upsampling to the HR size (``lr``)."""
    h, w = (hr[0] // SCALE, hr[1] // SCALE) if getattr(net, "lr_input", False) else hr
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def registered() -> list[str]:
    """Every network the package registers, read from the registry (a network added later is covered
    automatically); stand-ins that test modules register (``tiny_test_net``) are left out."""
    return [name for name in list_models() if MODEL_REGISTRY[name].__module__.startswith("model.")]
