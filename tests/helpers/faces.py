"""Four 32x32 face crops (HR) and their x8 bicubic LR, upsampled back: the tiny overfitting set."""

import torch
import torch.nn.functional as F
from skimage import data as skdata


def four_face_crops(rows: slice, cols: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """(lr_up, hr), both (4, 3, 32, 32): the astronaut's face window resized to 64x64, cut in four."""
    face = torch.from_numpy(skdata.astronaut()[rows, cols]).permute(2, 0, 1).float().div(255).unsqueeze(0)
    face = F.interpolate(face, size=(64, 64), mode="bicubic", antialias=True, align_corners=False)
    hr = torch.cat([face[..., i : i + 32, j : j + 32] for i in (0, 32) for j in (0, 32)]).clamp(0, 1)
    lr = F.interpolate(hr, scale_factor=1 / 8, mode="bicubic", antialias=True, align_corners=False)
    lr_up = F.interpolate(lr, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    return lr_up, hr
