"""The ``torch`` backend: the compiled CPU kernel where it builds, else a pure-PyTorch chunked scan."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from model.ssm.chunked_scan import selective_scan_chunked
from model.ssm.cpu_kernel import kernel_available, scan_cpu_kernel

logger = logging.getLogger(__name__)
_logged: set[str] = set()


def torch_backend(device: torch.device) -> Callable:
    """The scan function of the ``torch`` backend on ``device`` (builds the CPU kernel on first use; logs once)."""
    compiled = torch.device(device).type == "cpu" and kernel_available()
    impl = "torch (compiled CPU kernel)" if compiled else "torch (pure PyTorch)"
    if impl not in _logged:
        _logged.add(impl)
        logger.info("selective scan: %s", impl)
    return scan_cpu_kernel if compiled else selective_scan_chunked


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``selective_scan_reference``: compiled kernel on CPU when available (chosen per call)."""
    fn = torch_backend(u.device)
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
