"""LPIPS (v0.1) with AlexNet (default, the FSR tables) or VGG (RHMC), backbone weights read offline.

The ``lpips`` package ships its linear calibration layers but takes the ImageNet backbone from
torchvision, which downloads it. Here the backbone is built untrained and its weights are read
from the torch hub cache (``<torch.hub.get_dir()>/checkpoints/<file>``) or an explicit path;
nothing is ever downloaded. Inputs are RGB scaled to [-1, 1] (uint8 images: x / 127.5 - 1).

Script: ``python -m metrics.lpips --pred-dir P --gt-dir G [--net alex|vgg] [--weights FILE] [--csv FILE]``
(default CSV: ``<pred_dir>_lpips_<net>.csv`` beside the folder); also ``python -m metrics.lpips GT_DIR SR_DIR``
(HybriMamba's calc_lpips.py order) and, by path, ``python metrics/calculate_lpips.py ...`` (RHMC's).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path (python metrics/x.py): the repository root first, not metrics/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import functools
import warnings

import lpips as lpips_pkg
import numpy as np
import torch

from metrics.io import default_csv, score_and_report
from utils.authors import folder_args
from utils.cli import ArgumentParser, run_cli

BACKBONES = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}


def backbone_weights_path(net: str = "alex", weights: str | Path | None = None, flag: str = "--weights") -> Path:
    """The torchvision ImageNet weights file for ``net``: ``weights`` if given, else the hub cache one
    (the error names the caller's command-line ``flag``)."""
    if net not in BACKBONES:
        raise ValueError(f"LPIPS net must be one of {', '.join(BACKBONES)}, got {net!r}")
    filename, url = BACKBONES[net]
    path = Path(weights) if weights is not None else Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS-{net} needs the torchvision ImageNet backbone weights file {filename!r}, not found at {str(path)!r}. "
            f"Download {url} on a machine with internet and copy it to "
            f"{Path(torch.hub.get_dir()) / 'checkpoints' / filename} (the torch hub cache), "
            f"or pass its path with {flag}."
        )
    return path


def load_backbone(model: lpips_pkg.LPIPS, path: str | Path) -> None:
    """Copy torchvision ``features.<i>.*`` tensors into the LPIPS trunk (its ``slice<k>.<i>.*``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors of many kinds for a bad file
        raise ValueError(
            f"backbone weights file {str(path)!r} is not a readable torch state dict ({type(err).__name__}); "
            f"expected torchvision's {BACKBONES[model.pnet_type][0]}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(
            f"backbone weights file {str(path)!r} holds a {type(state).__name__}, expected a state dict "
            f"(torchvision's {BACKBONES[model.pnet_type][0]})"
        )
    target = model.net.state_dict()
    mapped = {}
    for key in target:
        source = "features." + key.split(".", 1)[1]
        if source not in state:
            raise KeyError(
                f"backbone weights file {str(path)!r} has no tensor {source!r} (needed for {model.pnet_type})"
            )
        if state[source].shape != target[key].shape:
            raise ValueError(
                f"backbone weights file {str(path)!r}: {source!r} has shape {tuple(state[source].shape)}, "
                f"expected {tuple(target[key].shape)} for {model.pnet_type}"
            )
        mapped[key] = state[source]
    model.net.load_state_dict(mapped)


def build_lpips(
    net: str = "alex",
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    random_backbone: bool = False,
    flag: str = "--weights",
) -> lpips_pkg.LPIPS:
    """LPIPS v0.1 in eval mode with calibrated linear layers; ``random_backbone`` only for plumbing tests."""
    path = None if random_backbone else backbone_weights_path(net, weights, flag)
    with warnings.catch_warnings():  # torchvision's 'pretrained' deprecation inside lpips
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_pkg.LPIPS(pretrained=True, net=net, version="0.1", pnet_rand=True, verbose=False)
    if path is not None:
        load_backbone(model, path)
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def lpips_tensors(model: lpips_pkg.LPIPS, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS (B,) of (B, 3, H, W) images in [0, 1]."""
    return model(pred * 2 - 1, gt * 2 - 1).flatten()


@functools.lru_cache(maxsize=4)
def _cached(net: str, weights: str | None, device: str) -> lpips_pkg.LPIPS:
    return build_lpips(net, weights, device)


def _to_tensor(img: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None].to(device) / 127.5 - 1


@torch.no_grad()
def calculate_lpips(
    pred: np.ndarray,
    gt: np.ndarray,
    net: str = "alex",
    weights: str | Path | None = None,
    device: str = "cpu",
    model: lpips_pkg.LPIPS | None = None,
) -> float:
    """LPIPS of two HxWx3 uint8 RGB images; ``model`` or one built once per net/weights/device."""
    if model is None:
        model = _cached(net, None if weights is None else str(weights), str(device))
    return float(model(_to_tensor(pred, device), _to_tensor(gt, device)).item())


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = ArgumentParser(description="LPIPS v0.1 between two image folders paired by file name")
    parser.add_argument("--pred-dir", "-restored_folder", default=None, help="super-resolved images")
    parser.add_argument("--gt-dir", "-gt_folder", default=None, help="ground truth, paired by file name")
    parser.add_argument("--net", choices=tuple(BACKBONES), default="alex")
    parser.add_argument("--weights", default=None, help="torchvision backbone weights file (default: torch hub cache)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--csv", default=None, help="per-image CSV (default: <pred_dir>_lpips_<net>.csv beside it)")
    args = folder_args(parser, argv, "GT_DIR SR_DIR")
    _cached(args.net, args.weights, args.device)  # a missing or bad weights file fails before any image is read

    def score(p: np.ndarray, g: np.ndarray) -> float:
        return calculate_lpips(p, g, net=args.net, weights=args.weights, device=args.device)

    csv_path = Path(args.csv) if args.csv else default_csv(args.pred_dir, f"lpips_{args.net}")
    convention = f"LPIPS v0.1 {args.net}, RGB in [-1, 1] from uint8"
    return score_and_report(args.pred_dir, args.gt_dir, {"lpips": score}, csv_path=csv_path, convention=convention)


if __name__ == "__main__":
    run_cli(main)
