"""Shared check for ablation switches: same weights where shapes agree, yet a different output."""

import torch
from torch import nn


def copy_matching_weights(dst: nn.Module, src: nn.Module) -> set[str]:
    """Load every tensor of ``src`` whose key and shape exist in ``dst``; return the keys of ``dst`` left as built."""
    own = dst.state_dict()
    shared = {k: v for k, v in src.state_dict().items() if k in own and own[k].shape == v.shape}
    dst.load_state_dict(shared, strict=False)
    return set(own) - set(shared)


def assert_switch_changes_output(ablated: nn.Module, full: nn.Module, x: torch.Tensor) -> set[str]:
    """With ``full``'s weights copied into ``ablated`` the outputs must still differ; returns the uncopied keys."""
    kept = copy_matching_weights(ablated, full)
    ablated.eval(), full.eval()
    with torch.no_grad():
        out_ablated, out_full = ablated(x), full(x)
    assert torch.isfinite(out_ablated).all()
    assert (out_ablated - out_full).abs().max() > 1e-4, "the switch did not change the computation"
    return kept
