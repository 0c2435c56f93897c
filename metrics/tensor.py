"""Network output tensors to uint8 images (the one torch-dependent helper of the metrics package)."""

from __future__ import annotations

import numpy as np
import torch

QUANTIZE = ("round", "truncate")


def tensor_to_uint8(t: torch.Tensor, quantize: str = "round") -> np.ndarray:
    """(3, H, W) float in [0, 1] -> HxWx3 uint8; (B, 3, H, W) -> (B, H, W, 3).

    ``round``: clamp(x * 255, 0, 255) rounded half to even. ``truncate``: the same value cut
    toward zero, as the papers' test scripts save their outputs (``np.clip(x * 255, 0, 255)``
    then ``astype(np.uint8)``, in float32).
    """
    if t.dim() not in (3, 4) or t.shape[-3] != 3:
        raise ValueError(f"tensor_to_uint8 expects (3, H, W) or (B, 3, H, W), got shape {tuple(t.shape)}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    scaled = (t.detach().float() * 255.0).clamp(0, 255)
    out = scaled.round() if quantize == "round" else scaled.trunc()
    return out.to(torch.uint8).movedim(-3, -1).cpu().numpy()
