"""Autocast-off regions that cost nothing where autocast is already off."""

from __future__ import annotations

import contextlib

import torch


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """``torch.autocast(device_type, enabled=False)`` while autocast is on for ``device_type``, else no context.

    The same numerics either way; a graph traced without autocast then holds no autocast region (torch.export
    turns each region into a submodule and inlines it back, re-generating the whole graph's code once per region)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
