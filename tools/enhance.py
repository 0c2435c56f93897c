"""Super-resolve the faces of real photos: detect, crop, super-resolve, paste back.

    python -m tools.enhance PHOTO_OR_DIR --checkpoint CKPT --out DIR [--margin 0.25] [--min-face 24]
                            [--feather 0.1] [--device cpu|cuda] [--no-ema]

Faces are found with OpenCV's frontal-face Haar cascade that the opencv-python-headless wheel ships
(``cv2.data.haarcascades``; nothing is downloaded). Each face box is widened by ``--margin`` of its
side on every side (the networks were trained on whole-face crops such as CelebA's), made square and
kept inside the photo; the crop is resized to the network's LR size (HR/scale, PIL bicubic), upsampled
like training (PIL bicubic x scale), super-resolved, resized to the crop's size and pasted back with a
linear feather over ``--feather`` of the side at its edges. Writes per photo
``<stem>_enhanced.png`` (the photo with its faces replaced), ``<stem>_face<i>.png`` (each HR face) and
``<stem>_side_by_side.png`` (per face: the crop, the network's LR input, bicubic, SR). A photo with no
face says so (status 1 when no photo has one). The network expects an aligned, upright face; faces
larger than its HR size are replaced by a less detailed one (noted).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from data.degrade import resize, to_tensor
from metrics.tensor import tensor_to_uint8
from utils import figure
from utils.cli import ArgumentParser, run_cli
from utils.image_io import DataError, list_images, read_rgb
from utils.value_range import predict_unit

log = logging.getLogger("enhance")
ROOT = Path(__file__).resolve().parents[1]
CASCADE = "haarcascade_frontalface_default.xml"

Box = tuple[int, int, int, int]  # left, top, width, height


def _test_script() -> Any:
    """The repo's test.py as a module (by path: ``import test`` may find the standard library's package)."""
    spec = importlib.util.spec_from_file_location("fsr_test_script", ROOT / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def detector() -> Any:
    """OpenCV's bundled frontal-face Haar cascade."""
    import cv2  # OpenCV is slow to import; only the face detector needs it

    path = Path(cv2.data.haarcascades) / CASCADE
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"OpenCV's face cascade {str(path)!r} did not load; reinstall opencv-python-headless")
    return cascade


def find_faces(rgb: np.ndarray, cascade: Any, min_face: int) -> list[Box]:
    """Face boxes (left, top, width, height), largest first."""
    import cv2  # OpenCV is slow to import; only the face detector needs it

    grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_face, min_face))
    boxes = [tuple(int(v) for v in box) for box in (found if len(found) else [])]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def square_crop(box: Box, margin: float, width: int, height: int) -> Box:
    """The face box widened by ``margin`` of its side on each side, made square and shifted inside the photo."""
    left, top, w, h = box
    side = min(round(max(w, h) * (1 + 2 * margin)), width, height)
    cx, cy = left + w / 2, top + h / 2
    x0 = int(min(max(round(cx - side / 2), 0), width - side))
    y0 = int(min(max(round(cy - side / 2), 0), height - side))
    return x0, y0, side, side


def feather_mask(side: int, feather: float) -> np.ndarray:
    """(side, side, 1) weights: 1 inside, falling linearly to 0 over ``feather * side`` pixels at the edges."""
    ramp = max(1, round(feather * side))
    edge = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float64)
    line = np.clip((edge + 0.5) / ramp, 0.0, 1.0)
    return np.minimum(line[:, None], line[None, :])[..., None]


def enhance_photo(
    path: Path, net: torch.nn.Module, cfg: dict[str, Any], cascade: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """Find, super-resolve and paste back every face of one photo; write its outputs; returns what was done."""
    photo = read_rgb(path)
    height, width = photo.shape[:2]
    boxes = find_faces(photo, cascade, args.min_face)
    if not boxes:
        print(f"{path}: no face found (OpenCV frontal-face Haar cascade, faces of at least {args.min_face} px)")
        return {"photo": str(path), "faces": []}
    scale, hr = cfg["scale"], cfg["data"]["val"]["hr_size"]
    args.out.mkdir(parents=True, exist_ok=True)
    out = photo.astype(np.float64)
    rows, faces = [], []
    for i, box in enumerate(boxes):
        x0, y0, side, _ = square_crop(box, args.margin, width, height)
        crop = Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side])
        small = crop.resize((hr // scale, hr // scale), Image.Resampling.BICUBIC)
        up = resize(small, (hr, hr), args.kernel)
        with torch.no_grad():
            x = to_tensor(small if getattr(net, "lr_input", False) else up)  # SwinIR, MambaIR, DIC take the LR
            sr = predict_unit(net, x[None].to(args.device), cfg["data"]["value_range"])
        face = tensor_to_uint8(sr.float().cpu())[0]
        Image.fromarray(face).save(args.out / f"{path.stem}_face{i}.png")
        pasted = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64)
        mask = feather_mask(side, args.feather)
        region = out[y0 : y0 + side, x0 : x0 + side]
        out[y0 : y0 + side, x0 : x0 + side] = mask * pasted + (1 - mask) * region
        rows.append([crop, small, up, face])
        faces.append({"box": [int(v) for v in box], "crop": [x0, y0, side, side]})
        if side > hr:
            print(
                f"{path}: face {i} is {side} px, larger than the network's {hr} px output: the pasted face has less detail"
            )
    enhanced = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    Image.fromarray(enhanced).save(args.out / f"{path.stem}_enhanced.png")
    titles = ["photo crop", f"LR {hr // scale}x{hr // scale}", "bicubic", "SR"]
    figure.save_figure(figure.grid(rows, titles, tile=max(128, hr)), args.out / f"{path.stem}_side_by_side.png")
    print(f"{path}: {len(boxes)} face(s) -> {args.out / (path.stem + '_enhanced.png')}")
    return {"photo": str(path), "faces": faces}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description="Detect the faces of photos, super-resolve them and paste them back")
    p.add_argument("photos", type=Path, help="a photo or a folder of photos")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--margin", type=float, default=0.25, help="widen each face box by this fraction per side")
    p.add_argument("--min-face", type=int, default=24, help="smallest face side to detect, in pixels")
    p.add_argument("--feather", type=float, default=0.1, help="blend ramp at the pasted edges, fraction of the side")
    p.add_argument(
        "--kernel", choices=("pil", "matlab"), default="pil", help="bicubic kernel of the x scale upsampling"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even when EMA weights exist")
    args = p.parse_args(argv)
    if not 0 <= args.margin <= 2 or not 0 < args.feather <= 0.5 or args.min_face < 8:
        p.error(f"need 0 <= --margin <= 2, 0 < --feather <= 0.5, --min-face >= 8; got {args.margin}, "
                f"{args.feather}, {args.min_face}")  # fmt: skip
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if not args.photos.exists():
        raise DataError(f"photo {str(args.photos)!r} does not exist")
    photos = list_images(args.photos, "photo folder") if args.photos.is_dir() else [args.photos]
    cascade = detector()
    net, cfg, _ = _test_script().load_model(args.checkpoint, None, not args.no_ema, args.device)
    done = [enhance_photo(path, net, cfg, cascade=cascade, args=args) for path in photos]
    if not any(d["faces"] for d in done):
        raise DataError(f"no face found in {len(done)} photo(s) of {str(args.photos)!r}; nothing written")
    return done


if __name__ == "__main__":
    run_cli(main)
