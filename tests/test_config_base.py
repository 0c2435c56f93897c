"""Config files that extend another with ``base:`` (used by configs/ablations/)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import build_model
from utils.config import ConfigError, load_config


def test_base_is_deep_merged_under_the_file(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text(
        "name: parent\nmodel: {name: sparnet, min_ch: 8, res_depth: 2}\ntrain: {batch_size: 2, iterations: 5}\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../parent.yaml\nname: child\nmodel: {res_depth: 1}\n")
    cfg = load_config(tmp_path / "sub" / "child.yaml", ["train.batch_size=3"])
    assert cfg["name"] == "child"
    assert cfg["model"] == {"name": "sparnet", "min_ch": 8, "res_depth": 1}
    assert cfg["train"]["iterations"] == 5 and cfg["train"]["batch_size"] == 3


def test_model_section_naming_another_network_replaces_the_base_one(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text("model: {name: sparnet, min_ch: 8}\ntrain: {batch_size: 2}\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nmodel: {name: bicubic}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg["model"] == {"name": "bicubic"} and cfg["train"]["batch_size"] == 2
    (tmp_path / "same.yaml").write_text("base: parent.yaml\nmodel: {name: sparnet, res_depth: 1}\n")
    assert load_config(tmp_path / "same.yaml")["model"] == {"name": "sparnet", "min_ch": 8, "res_depth": 1}


def test_base_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml.*does not exist"):
        load_config(tmp_path / "c.yaml")


def test_every_shipped_config_loads() -> None:
    configs = sorted(Path("configs").rglob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_config(path)
        assert cfg["model"]["name"], path


# HR side of the check: 32 unless the network needs more (SPARNet's hourglasses at in_size 128, DIC's LR divisible by 8,
# SwinIR's LR reflect-padded to its window of 8)
SMALLEST_HR = {"sparnet": 64, "dic": 64, "swinir": 64}
_WORKING: set[str] = set()  # model sections (with the scale) already built and run: configs share them


@pytest.mark.parametrize("path", sorted(Path("configs").rglob("*.yaml")), ids=str)
def test_every_shipped_config_builds_a_working_model(path: Path, single_thread: None) -> None:
    torch.manual_seed(0)
    cfg = load_config(path)
    key = json.dumps([cfg["model"], cfg["scale"]], sort_keys=True)
    if key in _WORKING:  # the same section builds the same network from the same seed: checked already
        return
    net = build_model(cfg["model"]).eval()
    side = SMALLEST_HR.get(cfg["model"]["name"], 32)
    x = torch.rand(1, 3, side, side)
    lr = F.interpolate(x, scale_factor=1 / cfg["scale"], mode="area") if getattr(net, "lr_input", False) else x
    with torch.no_grad():
        y = net(lr)
    assert y.shape == x.shape and torch.isfinite(y).all(), path
    _WORKING.add(key)
