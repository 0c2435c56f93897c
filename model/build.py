"""Networks as every entry point builds them: the registry's network with its selective scan resolved once.

``build_network(cfg, device)`` builds ``cfg["model"]``, resolves ``cfg["ssm"]["backend"]`` for
``device`` (imports, the CPU kernel's build and the backend's log line happen here, once) and binds
the resolved scan to every module that scans: any module with a ``scan_backend`` attribute
(``model.ss2d.SS2D``, ``model.mamba1d.Mamba1D`` and whatever a new network declares), found by a
walk over ``net.modules()``. ``load_network(checkpoint)`` does the same for a checkpoint's config and
loads its weights. ``compile_network`` is the one place a network is handed to ``torch.compile``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.registry import build_model
from model.ssm import Scan, resolve_backend
from utils.checkpoint import check_model_name, load_checkpoint, load_weights
from utils.config import load_config, resolve_config
from utils.schema import COMPILE_MODES


def scanning_modules(net: nn.Module) -> list[nn.Module]:
    """The modules of ``net`` that run a selective scan (they declare ``scan_backend``)."""
    return [m for m in net.modules() if hasattr(m, "scan_backend")]


def bind_scan(net: nn.Module, scan: Scan) -> nn.Module:
    """Hand ``scan`` to every module of ``net`` that scans; returns ``net``."""
    for module in scanning_modules(net):
        module.scan_backend = scan
    return net


def build_network(cfg: dict[str, Any], device: torch.device | str = "cpu", scan: Scan | None = None) -> nn.Module:
    """``cfg["model"]`` built, its scan (``cfg["ssm"]["backend"]``, default auto, or ``scan``) bound, on ``device``."""
    device = torch.device(device)
    if scan is None:
        ssm = cfg.get("ssm", {})
        scan = resolve_backend(ssm.get("backend", "auto"), device, ssm.get("deterministic", False))
    return bind_scan(build_model(cfg["model"]), scan).to(device)


def load_network(
    checkpoint: str | Path,
    config: str | Path | None = None,
    use_ema: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The network of ``checkpoint`` (built from ``config`` or the checkpoint's own) with its EMA (default) or raw
    weights, in eval mode on ``device``; returns (net, config, info)."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    cfg = load_config(config) if config is not None else resolve_config(state["config"])
    check_model_name(state, cfg["model"]["name"], checkpoint)
    net = build_network(cfg, "cpu", scan=resolve_backend(cfg["ssm"]["backend"], device, cfg["ssm"]["deterministic"]))
    which = "ema" if use_ema and state.get("ema") is not None else "model"
    load_weights(
        net,
        state[which],
        checkpoint,
        what=which,
        saved_model_cfg=(state.get("config") or {}).get("model"),
        model_cfg=cfg["model"],
    )
    info = {"model_name": state["model_name"], "weights": which, "iteration": state["iteration"]}
    return net.to(device).eval(), cfg, info


# Two inductor scheduler passes grow faster than one graph of a whole network. The fusion search tries each node
# with up to this many later nodes of every buffer it shares (torch's default 64; tiny HybriMamba forward: 265k
# pair checks, 84 s; at 8: 55k, 28 s, byte-identical code). The peak-memory reorder (on since torch 2.6) scans
# the whole ready set at every step: over 3.5 CPU min on the paper config once fusion was bounded.
# README "Bounding the whole-network compile" has the measurements.
WHOLE_NETWORK_INDUCTOR = {"max_fusion_buffer_group_pairwise_attempts": 8, "reorder_for_peak_memory": False}


def compile_network(net: nn.Module, mode: str = "default", regional: bool = False) -> nn.Module:
    """``torch.compile`` ``net`` in place (its state dict keeps its keys, so checkpoints load uncompiled).

    ``mode``: one of ``COMPILE_MODES`` (``none`` returns ``net`` as it is). The whole network compiles with
    ``mode``'s inductor options plus ``WHOLE_NETWORK_INDUCTOR``. ``regional`` compiles each module that scans
    instead, with static shapes: blocks of one shape share one compiled graph (one compile per distinct block,
    e.g. 6 for HybriMamba's 7 stages; automatic dynamic shapes would recompile most of them as dynamic graphs
    instead), and the glue between them runs eagerly."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode == "none":
        return net
    if regional:
        for module in scanning_modules(net):
            module.compile(mode=mode, dynamic=False)
        return net
    import torch._inductor  # only when compiling: its import takes about 2 s that other entry points need not pay

    net.compile(options={**torch._inductor.list_mode_options(mode), **WHOLE_NETWORK_INDUCTOR})
    return net
