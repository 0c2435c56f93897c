"""tools.enhance: OpenCV's bundled Haar cascade finds the face, the crop is super-resolved and pasted back
inside its box only; a photo without a face says so and writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from data.degrade import resize
from model import build_model
from tools import enhance
from utils.checkpoint import save_checkpoint
from utils.config import resolve_config

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def bicubic_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The identity network on the bicubic-upsampled input: its SR face is exactly bicubic x8 of the LR."""
    path = tmp_path_factory.mktemp("ckpt") / "bicubic.pt"
    cfg = resolve_config({"model": {"name": "bicubic"}})
    state = build_model(cfg["model"]).state_dict()
    save_checkpoint({"model_name": "bicubic", "model": state, "ema": None, "config": cfg, "iteration": 0}, path)
    return path


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def test_face_pasted_into_a_generated_photo_is_found_and_replaced_in_its_box_only(tmp_path, bicubic_ckpt):
    yy, xx = np.mgrid[0:480, 0:640]
    photo = np.stack([60 + xx * 0.2, 90 + yy * 0.15, 120 + 0 * xx], axis=-1).astype(np.uint8)  # a smooth wall
    head = skdata.astronaut()[36:191, 146:301]  # Eileen Collins' head; her face spans rows/cols 31..124 of it
    photo[200:320, 400:520] = np.asarray(Image.fromarray(head).resize((120, 120)))  # face at (424, 224), 72 px
    Image.fromarray(photo).save(tmp_path / "group.png")
    out = tmp_path / "out"
    done = enhance.main(
        [str(tmp_path / "group.png"), "--checkpoint", str(bicubic_ckpt), "--out", str(out), "--device", "cpu"]
    )
    boxes = done[0]["faces"]
    assert len(boxes) == 1
    x0, y0, side, _ = boxes[0]["crop"]
    assert iou(tuple(boxes[0]["box"]), (424, 224, 72, 72)) > 0.6  # the pasted face, not the wall
    enhanced = np.asarray(Image.open(out / "group_enhanced.png"))
    outside = np.ones(photo.shape[:2], dtype=bool)
    outside[y0 : y0 + side, x0 : x0 + side] = False
    assert np.array_equal(enhanced[outside], photo[outside])  # nothing changes outside the crop
    assert not np.array_equal(enhanced[~outside], photo[~outside])
    crop = Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side])
    expected = np.asarray(resize(crop.resize((16, 16), Image.Resampling.BICUBIC), (128, 128)))
    assert np.array_equal(np.asarray(Image.open(out / "group_face0.png")), expected)
    assert Image.open(out / "group_side_by_side.png").width > 4 * 128


def test_astronaut_face_is_found(tmp_path, bicubic_ckpt, capsys):
    Image.fromarray(skdata.astronaut()).save(tmp_path / "astronaut.png")
    done = enhance.main(
        [str(tmp_path / "astronaut.png"), "--checkpoint", str(bicubic_ckpt), "--out", str(tmp_path / "o")]
    )
    (box,) = [f["box"] for f in done[0]["faces"]]
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    assert 180 < cx < 290 and 60 < cy < 170  # her face in skimage's 512x512 photograph
    assert "1 face(s)" in capsys.readouterr().out


def test_photo_without_a_face_says_so_and_writes_nothing(tmp_path, bicubic_ckpt, capsys):
    x = np.linspace(0, 255, 200)
    Image.fromarray(np.stack([np.add.outer(x, x) / 2] * 3, axis=-1).astype(np.uint8)).save(tmp_path / "wall.png")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"no face found in 1 photo\(s\)"):
        enhance.main([str(tmp_path / "wall.png"), "--checkpoint", str(bicubic_ckpt), "--out", str(out)])
    assert "wall.png: no face found (OpenCV frontal-face Haar cascade" in capsys.readouterr().out
    assert not out.exists()
