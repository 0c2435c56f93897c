"""DIC: Deep Iterative Collaboration of face SR and landmark estimation (Ma et al., CVPR 2020).

Read top-down next to the paper's Fig. 2: the 16x16 LR face is encoded once (Conv3x3-PReLU,
pixel-shuffle x2 to 32x32); then ``n_steps`` iterations of an SR branch and an alignment
branch collaborate. Step 0 is a coarse recovery by a feedback block alone; every later step
runs the recurrent Attentive Fusion feedback block on [LR features, its previous output] and
the five parsing maps merged from the last landmark heatmaps. Each step's SR image (features
-> Deconv x4 -> Conv3x3, plus the bilinear x8 of the LR) goes to a feedback hourglass that
predicts landmark heatmaps at 1/4 size and carries its own hidden state to the next step.

Written from the paper and the facts of the authors' released code (Maclory/Deep-Iterative-
Collaboration), with its numerics: the feedback block's projection groups go x8 up and down
(Deconv / Conv 12, stride 8), the hourglass residual blocks have no normalisation and no ReLU
after their Conv3x3, and the released data pipeline's mean shift (``rgb_mean``) is applied
inside the network, which is exactly equivalent. Train mode returns every step
(``{"sr", "sr_steps", "heatmaps"}``, steps stacked first); eval mode the last step's SR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.registry import register_model

# 68-point (iBUG) groups merged into the five parsing maps: left eye, right eye, nose, mouth,
# face outline with brows.
PARTS_68 = ((36, 42), (42, 48), (27, 36), (48, 68), (0, 27))


def conv_prelu(c_in: int, c_out: int, k: int, stride: int = 1, padding: int | None = None) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2 if padding is None else padding), nn.PReLU(init=0.2)
    )


def deconv_prelu(c_in: int, c_out: int, k: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, k, stride=stride, padding=padding), nn.PReLU(init=0.2))


class FeedbackBlock(nn.Module):
    """SRFBN feedback block: Conv1x1 in, ``groups`` up/down projection pairs with dense 1x1
    transitions (x8 Deconv 12/8/2 up, Conv 12/8/2 down), Conv1x1 over all LR projections."""

    def __init__(self, dim: int, groups: int, c_in: int) -> None:
        super().__init__()
        self.compress_in = conv_prelu(c_in, dim, 1)
        self.up = nn.ModuleList(deconv_prelu(dim, dim, 12, stride=8, padding=2) for _ in range(groups))
        self.down = nn.ModuleList(conv_prelu(dim, dim, 12, stride=8, padding=2) for _ in range(groups))
        self.up_tran = nn.ModuleList(conv_prelu(dim * (i + 1), dim, 1) for i in range(1, groups))
        self.down_tran = nn.ModuleList(conv_prelu(dim * (i + 1), dim, 1) for i in range(1, groups))
        self.compress_out = conv_prelu(dim * groups, dim, 1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        lr_feats, hr_feats = [x], []
        for i, (up, down) in enumerate(zip(self.up, self.down)):
            low = self.up_tran[i - 1](torch.cat(lr_feats, 1)) if i else x
            hr_feats.append(up(low))
            high = self.down_tran[i - 1](torch.cat(hr_feats, 1)) if i else hr_feats[0]
            lr_feats.append(down(high))
        return self.compress_out(torch.cat(lr_feats[1:], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.compress_in(x))


class AttentiveFusion(nn.Module):
    """Feature-heatmap fusion: Conv1x1-LReLU to ``parts`` feature groups, ``n_blocks`` grouped
    residual blocks (Conv3x3-LReLU-Conv3x3, one group per part), then the groups weighted by
    softmax over the parts of the parsing maps and summed."""

    def __init__(self, dim: int, parts: int, n_blocks: int) -> None:
        super().__init__()
        wide = dim * parts
        self.parts = parts
        self.conv_in = nn.Sequential(nn.Conv2d(dim, wide, 1), nn.LeakyReLU(0.2))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(wide, wide, 3, padding=1, groups=parts),
                nn.LeakyReLU(0.2),
                nn.Conv2d(wide, wide, 3, padding=1, groups=parts),
            )
            for _ in range(n_blocks)
        )

    def forward(self, feature: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
        f = self.conv_in(feature)
        for block in self.blocks:
            f = f + block(f)
        b, _, h, w = f.shape
        attention = parsing.softmax(dim=1).unsqueeze(2)  # (B, parts, 1, h, w)
        return (f.view(b, self.parts, -1, h, w) * attention).sum(1)


class AttentiveFeedbackBlock(FeedbackBlock):
    """Recurrent feedback block of steps >= 1: Conv1x1 on [LR features, previous output],
    attentive fusion with the parsing maps, then the projection groups."""

    def __init__(self, dim: int, groups: int, parts: int, n_fusion: int) -> None:
        super().__init__(dim, groups, 2 * dim)
        self.fusion = AttentiveFusion(dim, parts, n_fusion)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
        return self.project(self.fusion(self.compress_in(torch.cat([x, hidden], 1)), parsing))


class ResidualBlock(nn.Module):
    """Hourglass residual: Conv1x1-ReLU-Conv3x3-Conv1x1 (no norm, no ReLU after the 3x3) + skip."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_out // 2
        self.body = nn.Sequential(
            nn.Conv2d(c_in, mid, 1), nn.ReLU(), nn.Conv2d(mid, mid, 3, padding=1), nn.Conv2d(mid, c_out, 1)
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Hourglass(nn.Module):
    """Recursive hourglass of ``depth`` levels: skip residual + (pool, residual, inner, residual, up x2)."""

    def __init__(self, depth: int, dim: int) -> None:
        super().__init__()
        self.skip = ResidualBlock(dim, dim)
        self.down = ResidualBlock(dim, dim)
        self.inner = Hourglass(depth - 1, dim) if depth > 1 else ResidualBlock(dim, dim)
        self.up = ResidualBlock(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.skip(x) + F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=True)


class FeedbackHourglass(nn.Module):
    """Alignment branch: stem to 1/4 size, Conv1x1 on [features, hidden], a 4-level hourglass at
    twice the width; the first half of its output gives the heatmaps, the second half is the
    hidden state of the next step (the features themselves at step 0)."""

    def __init__(self, dim: int, keypoints: int) -> None:
        super().__init__()
        self.dim = dim
        self.stem = nn.Sequential(
            nn.Conv2d(3, dim // 4, 7, stride=2, padding=3),
            nn.ReLU(),
            ResidualBlock(dim // 4, dim // 2),
            nn.MaxPool2d(2, 2),
            ResidualBlock(dim // 2, dim // 2),
            ResidualBlock(dim // 2, dim),
        )
        self.compress_in = nn.Conv2d(2 * dim, 2 * dim, 1)
        self.hourglass = Hourglass(4, 2 * dim)
        self.head = nn.Sequential(
            ResidualBlock(dim, dim), nn.Conv2d(dim, dim, 1), nn.ReLU(), nn.Conv2d(dim, keypoints, 1)
        )

    def forward(self, image: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.stem(image)
        f = self.hourglass(self.compress_in(torch.cat([f, f if hidden is None else hidden], 1)))
        return self.head(f[:, : self.dim]), f[:, self.dim :]


def parsing_maps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Five parsing maps from (B, K, h, w) heatmaps: each heatmap divided by its max (>= 0.05),
    then the 68 points summed per facial part; 5-point heatmaps are kept as they are."""
    peak = heatmaps.amax(dim=(2, 3), keepdim=True).clamp_min(0.05)
    heatmaps = heatmaps / peak
    if heatmaps.shape[1] == 5:
        return heatmaps
    return torch.stack([heatmaps[:, a:b].sum(1) for a, b in PARTS_68], dim=1)


@register_model("dic")
class DIC(nn.Module):
    """DIC on the LR face: (B, 3, h, w) -> (B, 3, 8h, 8w), h and w divisible by 8.

    ``keypoints`` is 68 (iBUG annotations, as released) or 5 (CelebA's aligned landmarks).
    """

    lr_input = True  # takes the 16x16 LR itself (the pipeline's lr_small), not its bicubic upsampling
    scale = 8  # x8 only: a x2 pixel shuffle of the LR features, then a stride-4 deconvolution
    training_outputs = ("sr", "sr_steps", "heatmaps")
    training_targets = ("heatmap",)  # the data must provide landmark heatmaps (data.train.landmarks)

    def __init__(
        self,
        in_channels: int = 3,
        dim: int = 48,
        n_steps: int = 4,
        groups: int = 6,
        hg_dim: int = 256,
        keypoints: int = 68,
        n_fusion: int = 7,
        detach_attention: bool = False,
        rgb_mean: tuple[float, float, float] | list[float] = (0.509, 0.424, 0.378),
    ) -> None:
        super().__init__()
        if keypoints not in (5, 68):
            raise ValueError(
                f"DIC merges 68 landmark heatmaps into 5 parsing maps (or uses 5), got keypoints={keypoints}"
            )
        if len(rgb_mean) != in_channels:
            raise ValueError(f"rgb_mean needs {in_channels} values, got {list(rgb_mean)}")
        self.n_steps, self.detach_attention, self.keypoints = n_steps, detach_attention, keypoints
        self.register_buffer("rgb_mean", torch.tensor([float(m) for m in rgb_mean]).view(1, -1, 1, 1), persistent=False)
        self.conv_in = conv_prelu(in_channels, 4 * dim, 3)
        self.first_block = FeedbackBlock(dim, groups, dim)
        self.block = AttentiveFeedbackBlock(dim, groups, 5, n_fusion)
        self.out = deconv_prelu(dim, dim, 8, stride=4, padding=2)
        self.conv_out = nn.Conv2d(dim, in_channels, 3, padding=1)
        self.hg = FeedbackHourglass(hg_dim, keypoints)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(
                f"DIC takes the LR face (16x16 for x8) with H and W divisible by 8, got {tuple(x.shape[-2:])}"
            )
        x = x - self.rgb_mean.to(x.dtype)
        upsampled = F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False)
        lr_feat = F.pixel_shuffle(self.conv_in(x), 2)
        srs, heatmaps = [], []
        hidden_sr, hidden_hg, heatmap = None, None, None
        for step in range(self.n_steps):
            if step == 0:
                hidden_sr = self.first_block(lr_feat)
            else:
                parsing = parsing_maps(heatmap.detach() if self.detach_attention else heatmap)
                hidden_sr = self.block(lr_feat, hidden_sr, parsing)
            sr = upsampled + self.conv_out(self.out(hidden_sr))
            heatmap, hidden_hg = self.hg(sr, hidden_hg)
            srs.append(sr + self.rgb_mean.to(sr.dtype))
            heatmaps.append(heatmap)
        if not self.training:
            return srs[-1]
        return {"sr": srs[-1], "sr_steps": torch.stack(srs), "heatmaps": torch.stack(heatmaps)}
