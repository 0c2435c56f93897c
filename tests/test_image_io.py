"""utils/image_io.py, the one image-file module of data/, metrics/, test.py and tools/: one listing, one pairing
message, one error type for a missing path, one conversion note per kind wherever it is told."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from utils import image_io
from utils.image_io import (
    DataError,
    images_by_stem,
    list_images,
    pair_by_stem,
    pair_folders,
    read_pair,
    read_rgb,
    read_rgb_image,
)
from utils.logger import close_logger, setup_logger


def _folder(path, names):
    path.mkdir()
    for name in names:
        Image.new("RGB", (4, 4), (10, 20, 30)).save(path / name, format="PNG")
    return path


def test_one_listing_and_one_pairing_message_for_data_and_metrics(tmp_path):
    pred = _folder(tmp_path / "pred", ["b.png", "a.PNG", ".a.png", "x.png"])
    (pred / "notes.txt").write_text("not an image")
    (pred / "sub.png").mkdir()  # a folder with an image name is not listed
    gt = _folder(tmp_path / "gt", ["a.png", "b.png", "y.png", "z.png"])
    assert [p.name for p in list_images(pred)] == ["a.PNG", "b.png", "x.png"]  # sorted, hidden and non-files left out
    assert images_by_stem(pred, "prediction") == {"a": pred / "a.PNG", "b": pred / "b.png", "x": pred / "x.png"}
    with pytest.raises(
        DataError, match=r"1 prediction name\(s\) without ground-truth \[x\]; 2 ground-truth .*\[y, z\]"
    ):
        pair_folders(pred, gt)
    lr = list_images(pred)
    with pytest.raises(DataError, match=r"1 LR name\(s\) without HR \[x\]; 2 HR name\(s\) without LR \[y, z\]"):
        pair_by_stem(lr, list_images(gt), roles=("LR", "HR"), folders=(pred, gt))
    (pred / "x.png").unlink()
    (gt / "y.png").unlink()
    (gt / "z.png").unlink()
    assert pair_folders(pred, gt) == [(pred / "a.PNG", gt / "a.png"), (pred / "b.png", gt / "b.png")]


def test_a_missing_folder_or_file_is_both_a_data_error_and_file_not_found(tmp_path):
    for call in (lambda: list_images(tmp_path / "nope", "HR folder"), lambda: read_rgb(tmp_path / "nope.png")):
        with pytest.raises(DataError, match="nope"):
            call()
        with pytest.raises(FileNotFoundError, match="does not exist"):
            call()
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Image.new("RGB", (4, 6)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match=r"size mismatch: .*a.png is 4x4 but .*b.png is 4x6"):
        read_pair(tmp_path / "a.png", tmp_path / "b.png")


def test_each_conversion_kind_is_told_once_logged_or_where_the_caller_says(tmp_path, caplog):
    image_io._told.clear()
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    for i in range(2):
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"{i}.png")
        Image.fromarray(rgba[..., 0], "L").save(tmp_path / f"g{i}.png")
    told: list[str] = []
    for i in range(2):
        read_rgb(tmp_path / f"{i}.png", tell=told.append)
    assert told == [
        f"converting RGBA (alpha composited on white) images to 8-bit RGB (first one: {tmp_path / '0.png'})"
    ]
    with caplog.at_level("INFO", logger="utils.image_io"):
        for i in range(2):
            grey = read_rgb_image(tmp_path / f"g{i}.png")
    assert caplog.text.count("converting L images to 8-bit RGB") == 1
    assert grey.mode == "RGB" and np.array_equal(np.asarray(grey), np.repeat(rgba[..., :1], 3, axis=2))


def test_conversion_notes_reach_the_run_log(tmp_path):
    image_io._told.clear()
    Image.new("LA", (4, 4), (100, 50)).save(tmp_path / "la.png")
    setup_logger(tmp_path / "train.log", name="image_io_test")
    try:
        read_rgb(tmp_path / "la.png")
    finally:
        close_logger("image_io_test")
        logging.getLogger("image_io_test").propagate = True
    assert "converting LA (alpha composited on white) images to 8-bit RGB" in (tmp_path / "train.log").read_text()
