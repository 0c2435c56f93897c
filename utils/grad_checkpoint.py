"""``train.grad_checkpoint: blocks``: recompute each repeated block of a network in the backward pass.

A network opts in by naming its repeated block classes in a ``checkpoint_blocks`` class attribute
(HybriMamba: ``MambaStack`` and ``LEM``, the two halves of a HybriMamba block; RHMC: ``HMCB``).
:func:`enable_grad_checkpoint` then runs every such submodule under
``torch.utils.checkpoint.checkpoint(use_reentrant=False)`` while it trains with grad enabled: the
block keeps only its inputs for the backward and recomputes its activations there (the RNG state is
replayed, so dropout draws the same mask). Evaluation and ``no_grad`` calls run the plain forward.
The state_dict is unchanged. BatchNorm buffers inside a block are put back after the recompute, so
the running statistics are updated once per forward, as without checkpointing. Works with DDP and
``torch.compile`` (dynamo traces a non-reentrant checkpoint as one region).
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

MODES = ("none", "blocks")


def enable_grad_checkpoint(net: nn.Module, mode: str) -> int:
    """Make the network's ``checkpoint_blocks`` recompute in the backward (``mode="blocks"``); returns how
    many blocks (0 for ``"none"``). A block inside another checkpointed block is not wrapped again."""
    if mode not in MODES:
        raise ValueError(f"train.grad_checkpoint must be one of {list(MODES)}, got {mode!r}")
    if mode == "none":
        return 0
    classes = tuple(getattr(net, "checkpoint_blocks", ()))
    if not classes:
        raise ValueError(
            f"train.grad_checkpoint=blocks: {type(net).__name__} declares no repeated blocks to recompute "
            "(a checkpoint_blocks class attribute); use train.grad_checkpoint=none"
        )
    wrapped: list[str] = []
    for name, module in net.named_modules():
        if not name or not isinstance(module, classes) or any(name.startswith(f"{w}.") for w in wrapped):
            continue
        module._checkpoint_norms = [m for m in module.modules() if isinstance(m, _BatchNorm)]  # not registered
        module.forward = types.MethodType(_checkpointed_forward, module)
        wrapped.append(name)
    return len(wrapped)


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    forward = type(self).forward
    if not (self.training and torch.is_grad_enabled()):
        return forward(self, *args, **kwargs)
    extra = {}
    if self._checkpoint_norms and not torch.compiler.is_compiling():  # compiled graphs update buffers once
        extra["context_fn"] = functools.partial(_contexts, self._checkpoint_norms)
    return checkpoint(forward, self, *args, use_reentrant=False, **extra, **kwargs)


def _contexts(norms: list[_BatchNorm]) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """(forward, recompute) contexts: the recompute runs the same ops (checkpoint checks that), then the
    running statistics it updated a second time are put back."""
    return contextlib.nullcontext(), _restored_buffers(norms)


@contextlib.contextmanager
def _restored_buffers(norms: list[_BatchNorm]) -> Iterator[None]:
    saved = [(b, b.clone()) for bn in norms for b in bn.buffers(recurse=False)]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)
