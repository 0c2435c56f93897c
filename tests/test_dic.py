"""DIC: shapes 16->128, steps and heatmaps, parsing maps, landmark files / geometry / heatmaps, the heatmap
loss, config errors and a tiny training run on synthetic landmarks; counts against Table 1 (generic checks: test_models.py)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import test
import train
from data import build_dataset
from data.landmarks import fit_face, heatmaps, read_landmarks
from data.prepare import prepare
from metrics.complexity import count_parameters
from model import build_model
from model.dic import parsing_maps
from model.losses import WeightedLoss
from tests.helpers.tiny import TINY as TINY_OPTIONS
from utils.image_io import DataError

TINY = {"name": "dic", **TINY_OPTIONS["dic"].options}  # the tiny options of tests/helpers/tiny.py

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**kwargs):
    torch.manual_seed(0)
    return build_model({**TINY, **kwargs})


# ----------------------------------------------------------------------------- network
def test_lr_input_shapes_steps_and_heatmaps() -> None:
    net = tiny()
    assert net.lr_input is True
    x = torch.rand(2, 3, 16, 16)  # the 16x16 LR itself
    out = net.train()(x)
    assert out["sr_steps"].shape == (2, 2, 3, 128, 128) and out["heatmaps"].shape == (2, 2, 68, 32, 32)
    assert torch.equal(out["sr"], out["sr_steps"][-1])
    sr = net.eval()(torch.rand(1, 3, 8, 16))
    assert sr.shape == (1, 3, 64, 128) and torch.isfinite(sr).all()
    with pytest.raises(ValueError, match=r"divisible by 8.*\(12, 16\)"):
        net(torch.rand(1, 3, 12, 16))


def test_zero_reconstruction_is_the_bilinear_upsampling() -> None:
    """The mean shift is inside the network: with a zero last conv the SR is bilinear x8 of the LR."""
    net = tiny().eval()
    with torch.no_grad():
        net.conv_out.weight.zero_()
        net.conv_out.bias.zero_()
    x = torch.rand(1, 3, 8, 8)
    expected = F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False)
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_parsing_maps_normalise_and_merge_the_68_points() -> None:
    h = torch.zeros(1, 68, 4, 4)
    h[0, 37, 1, 2] = 3.0  # a left-eye point
    h[0, 50, 0, 0] = 0.01  # a weak mouth point: divided by max(0.01, 0.05)
    maps = parsing_maps(h)
    assert maps.shape == (1, 5, 4, 4)
    assert maps[0, 0, 1, 2] == 1.0 and maps[0, 0].sum() == 1.0
    assert abs(float(maps[0, 3, 0, 0]) - 0.2) < 1e-6 and maps[0, [1, 2, 4]].abs().sum() == 0
    five = torch.rand(1, 5, 4, 4)
    assert torch.allclose(parsing_maps(five), five / five.amax(dim=(2, 3), keepdim=True))


def test_counts_against_table_1() -> None:
    """The authors' x8 config gives 21,803,849 parameters (their code instantiated: identical); Table 1
    prints 22.8M (-4.4%). MACs at the 16x16 input: 45.3G conv MACs against the printed 35.5G."""
    with torch.device("meta"):
        net = build_model({"name": "dic"}).eval()
    assert count_parameters(net) == 21_803_849
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.empty(1, 3, 16, 16, device="meta"))
    assert abs(counter.get_total_flops() / 2 / 45.34e9 - 1) < 0.01


# ----------------------------------------------------------------------------- landmark data
def dot_images(folder: Path, size: tuple[int, int], points: dict[str, list[tuple[int, int]]]) -> None:
    """Grey images with one bright 1-pixel dot per landmark: the geometry oracle."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, pts in points.items():
        img = np.full((size[1], size[0], 3), 40, np.uint8)
        for x, y in pts:
            img[y, x] = 255
        Image.fromarray(img).save(folder / f"{stem}.png")


def celeba_file(path: Path, points: dict[str, list[tuple[int, int]]]) -> Path:
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    rows = [f"{stem}.jpg " + " ".join(f"{x} {y}" for x, y in pts) for stem, pts in points.items()]
    path.write_text("\n".join([str(len(rows)), header, *rows]) + "\n")
    return path


FACES = {
    "000001": [(70, 110), (106, 112), (88, 130), (74, 150), (104, 152)],
    "000002": [(60, 100), (110, 100), (85, 125), (70, 160), (100, 160)],
}


def test_heatmaps_peak_at_the_point_over_four() -> None:
    h = heatmaps(np.array([[40.0, 12.0], [8.0, 100.0]]), (128, 128), stride=4, sigma=1.0)
    assert h.shape == (2, 32, 32) and h.dtype == np.float32
    assert h[0, 3, 10] == 1.0 and h[1, 25, 2] == 1.0
    assert abs(h[0, 3, 11] - np.exp(-0.5)) < 1e-6


def test_celeba_points_follow_the_center_crop(tmp_path: Path) -> None:
    """178x218 aligned images: center crop 178x178 (top 20), resize to 128; the dot lands on the point."""
    dot_images(tmp_path / "img", (178, 218), {"000001": [FACES["000001"][0]]})
    marks = read_landmarks(celeba_file(tmp_path / "list_landmarks_align_celeba.txt", FACES))
    assert marks.n_points == 5 and marks.frame == "source"
    img = Image.open(tmp_path / "img" / "000001.png").convert("RGB")
    hr, pts = fit_face(img, marks.get("000001"), 128, "center_crop")
    assert hr.size == (128, 128)
    assert np.allclose(pts[0], [70 * 128 / 178, (110 - 20) * 128 / 178])
    bright = np.unravel_index(np.asarray(hr)[..., 0].argmax(), (128, 128))
    assert abs(bright[1] - pts[0][0]) <= 1 and abs(bright[0] - pts[0][1]) <= 1


def test_dic_pickle_crops_the_bbox_and_unsafe_pickles_are_refused(tmp_path: Path) -> None:
    info = {"a.jpg": {"landmark": np.array([[30.0, 40.0]] * 68), "bbox": [10, 20, 74, 84]}}
    (tmp_path / "info.pkl").write_bytes(pickle.dumps(info))
    marks = read_landmarks(tmp_path / "info.pkl")
    assert marks.n_points == 68 and marks.get("a").bbox == (10, 20, 74, 84)
    _, pts = fit_face(Image.new("RGB", (100, 100)), marks.get("a"), 128, "center_crop")
    assert np.allclose(pts[0], [(30 - 10) * 2, (40 - 20) * 2])
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"a": {"landmark": os.system}}))
    with pytest.raises(DataError, match="not allowed"):
        read_landmarks(tmp_path / "evil.pkl")
    (tmp_path / "nosize.json").write_text(json.dumps({"format": "fsr-landmarks-v1", "points": {"a": [[1, 2]]}}))
    with pytest.raises(DataError, match="'size' must be"):
        read_landmarks(tmp_path / "nosize.json")
    (tmp_path / "odd.txt").write_text("hello\n")
    with pytest.raises(DataError, match="not a DIC pickle"):
        read_landmarks(tmp_path / "odd.txt")


def test_datasets_carry_heatmaps_and_prepare_writes_hr_landmarks(tmp_path: Path) -> None:
    dot_images(tmp_path / "raw", (178, 218), {s: [p[0]] for s, p in FACES.items()})
    txt = celeba_file(tmp_path / "marks.txt", FACES)
    section = {"type": "hr_folder", "hr_dir": str(tmp_path / "raw"), "landmarks": str(txt)}
    with pytest.raises(DataError, match="do not move landmarks"):
        build_dataset(section, 8, train=True)  # flip / random_scale default on
    on_the_fly = build_dataset({**section, "flip": False, "random_scale": False}, 8, train=True)
    item = on_the_fly[0]
    assert item["heatmap"].shape == (5, 32, 32) and item["lr_small"].shape == (3, 16, 16)

    prepare(tmp_path / "raw", tmp_path / "set", landmarks=txt)
    written = json.loads((tmp_path / "set" / "landmarks.json").read_text())
    assert written["size"] == [128, 128] and set(written["points"]) == set(FACES)
    paired = build_dataset(
        {
            "type": "paired",
            "lr_dir": str(tmp_path / "set" / "LR"),
            "hr_dir": str(tmp_path / "set" / "HR"),
            "landmarks": str(tmp_path / "set" / "landmarks.json"),
        },
        8,
        train=False,
    )
    names = [paired[i]["name"] for i in range(len(paired))]
    assert torch.allclose(paired[names.index(item["name"])]["heatmap"], item["heatmap"], atol=1e-4)
    with pytest.raises(DataError, match="needs an hr_dir and landmarks in HR pixels"):
        build_dataset({"type": "paired", "lr_dir": str(tmp_path / "set" / "LR"), "landmarks": str(txt)}, 8, False)
    (tmp_path / "raw" / "000003.png").write_bytes((tmp_path / "raw" / "000001.png").read_bytes())
    with pytest.raises(DataError, match=r"no entry for 1 of 3 image\(s\), e.g. 000003"):
        build_dataset({**section, "flip": False, "random_scale": False}, 8, train=True)


def test_heatmap_loss_sums_over_steps_and_names_a_shape_mismatch() -> None:
    loss = WeightedLoss([{"type": "heatmap_mse", "output": "heatmaps", "target": "heatmap", "weight": 0.1}])
    gt = torch.zeros(2, 5, 4, 4)
    steps = torch.stack([gt + 1.0, gt + 2.0])  # (steps, B, K, h, w)
    total, parts = loss({"sr": gt, "heatmaps": steps}, {"hr": gt, "heatmap": gt})
    assert abs(parts["heatmap_mse:heatmaps"] - 5.0) < 1e-6 and abs(float(total) - 0.5) < 1e-6
    with pytest.raises(ValueError, match="model.keypoints"):
        loss({"sr": gt, "heatmaps": torch.zeros(2, 2, 68, 4, 4)}, {"hr": gt, "heatmap": gt})


# ----------------------------------------------------------------------------- training
def dic_config(root: Path, train_section: dict) -> Path:
    cfg = {
        "name": "dic_tiny",
        "scale": 8,
        "model": {**TINY, "keypoints": 5},
        "data": {"train": {"num_workers": 0, **train_section}, "val": {"type": "sample", "max_images": 2}},
        "train": {
            "batch_size": 2,
            "iterations": 2,
            "optimizer": {"type": "adam", "lr": 1e-4},
            "losses": [
                {"type": "l1", "output": "sr_steps"},
                {"type": "heatmap_mse", "output": "heatmaps", "target": "heatmap", "weight": 0.1},
            ],
        },
        "logging": {"print_every": 1, "val_every": 2, "save_every": 2, "tensorboard": False, "progress_bar": False},
        "paths": {"experiments_root": str(root / "runs")},
    }
    path = root / "dic.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_training_without_landmarks_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dot_images(tmp_path / "raw", (178, 218), {s: [p[0]] for s, p in FACES.items()})
    cfg = dic_config(tmp_path, {"type": "hr_folder", "hr_dir": str(tmp_path / "raw")})
    assert train.main(["--config", str(cfg)]) == 1
    assert (
        "trains on landmark heatmaps but data.train has no landmarks; set data.train.landmarks"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "runs").exists()


def test_keypoints_must_match_the_landmark_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dot_images(tmp_path / "raw", (178, 218), {s: [p[0]] for s, p in FACES.items()})
    section = {"type": "hr_folder", "hr_dir": str(tmp_path / "raw"), "flip": False, "random_scale": False}
    section["landmarks"] = str(celeba_file(tmp_path / "marks.txt", FACES))
    cfg = dic_config(tmp_path, section)
    assert train.main(["--config", str(cfg), "--set", "model.keypoints=68"]) == 1
    assert "predicts 68 landmark heatmaps but data.train.landmarks gives 5 points per face" in capsys.readouterr().err


def test_tiny_training_run_on_synthetic_landmarks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dot_images(tmp_path / "raw", (178, 218), {s: [p[0]] for s, p in FACES.items()})
    section = {
        "type": "hr_folder",
        "hr_dir": str(tmp_path / "raw"),
        "landmarks": str(celeba_file(tmp_path / "marks.txt", FACES)),
        "flip": False,
        "random_scale": False,
    }
    assert train.main(["--config", str(dic_config(tmp_path, section))]) == 0
    err = capsys.readouterr().err
    assert "heatmap_mse:heatmaps" in err and "l1:sr_steps" in err
    ckpt = tmp_path / "runs" / "dic_tiny" / "checkpoints" / "latest.pt"
    # test.py feeds DIC the 16x16 LR itself; an upsampled LR folder is refused with the reason
    prepare(tmp_path / "raw", tmp_path / "set")
    args = ["--checkpoint", str(ckpt), "--hr_dir", str(tmp_path / "set" / "HR"), "--no_progress"]
    summary = test.main([*args, "--lr_dir", str(tmp_path / "set" / "LR"), "--out_dir", str(tmp_path / "out")])
    assert summary["inputs"] == ["small"] and summary["count"] == 2
    assert Image.open(tmp_path / "out" / "images" / "000001.png").size == (128, 128)
    with pytest.raises(DataError, match="already upsampled.*this network takes the HR/8 LR"):
        test.main([*args, "--lr_dir", str(tmp_path / "set" / "LR_up"), "--out_dir", str(tmp_path / "out2")])


def test_complexity_default_size_is_the_lr() -> None:
    """``metrics.complexity`` counts lr_input networks at 128 / scale: DIC declares its fixed x8."""
    from metrics.complexity import profile

    report = profile({**TINY}, None, (), 0, 1)
    assert report["size"] == [16, 16]
