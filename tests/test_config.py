"""utils.config: defaults, dotted overrides, strict keys/types/choices, model kwargs, file errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import data  # noqa: F401  (fills the registries the schema reads, as the entry points do)
import model  # noqa: F401
from utils.config import ConfigError, default_config, load_config, resolve_config, save_config
from utils.registry import DATASET_REGISTRY, MODEL_REGISTRY, Registry
from utils.schema import Opt, registered


def write(tmp_path: Path, cfg: object, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_file_then_overrides_apply_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "a", "train": {"batch_size": 2, "optimizer": {"lr": 1e-3}}})
    cfg = load_config(path, ["train.batch_size=8", "train.scheduler.milestones=[10, 20]", "data.val.type=none"])
    assert cfg["name"] == "a"
    assert cfg["train"]["batch_size"] == 8
    assert cfg["train"]["optimizer"]["lr"] == 1e-3
    assert cfg["train"]["scheduler"]["milestones"] == [10, 20]
    assert cfg["data"]["val"]["type"] == "none"
    assert cfg["train"]["optimizer"]["betas"] == default_config()["train"]["optimizer"]["betas"]  # defaults stay


def test_model_overrides_and_replacement() -> None:
    cfg = resolve_config({"model": {"name": "bicubic"}}, ["model.scale=4"])
    assert cfg["model"] == {"name": "bicubic", "scale": 4}
    cfg = resolve_config(None, ["model={name: bicubic}"])
    assert cfg["model"] == {"name": "bicubic"}


def test_unknown_key_names_key_and_allowed() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.batchsize'; allowed under train: batch_size"):
        resolve_config({"train": {"batchsize": 4}})
    with pytest.raises(ConfigError, match=r"unknown config key 'logging\.val_evry'"):
        resolve_config(None, ["logging.val_evry=5"])


def test_bad_type_and_choice_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'train\.batch_size' expects int, got str 'four'"):
        resolve_config(None, ["train.batch_size=four"])
    with pytest.raises(ConfigError, match=r"'logging\.tensorboard' expects bool, got int 1"):
        resolve_config({"logging": {"tensorboard": 1}})
    with pytest.raises(ConfigError, match=r"'train\.amp' must be one of \['none', 'bf16', 'fp16'\], got 'fp8'"):
        resolve_config(None, ["train.amp=fp8"])
    with pytest.raises(ConfigError, match=r"'train\.optimizer' is a section; expected a mapping"):
        resolve_config(None, ["train.optimizer=adam"])
    with pytest.raises(ConfigError, match=r"'seed' may not be null"):
        resolve_config({"seed": None})
    path = write(tmp_path, {"train": {"ema": "yes"}})
    with pytest.raises(ConfigError, match=r"'train\.ema' expects int or float.*\(in .*exp\.yaml\)"):
        load_config(path)


def test_bool_is_not_an_int() -> None:
    with pytest.raises(ConfigError, match=r"'train\.batch_size' expects int, got bool True"):
        resolve_config(None, ["train.batch_size=true"])


def test_model_kwargs_checked_against_constructor() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) model\.widht for model 'bicubic'; allowed: scale"):
        resolve_config({"model": {"name": "bicubic", "widht": 3}})
    with pytest.raises(ConfigError, match=r"model\.name': unknown model 'nonet'; registered: .*bicubic"):
        resolve_config(None, ["model.name=nonet"])
    with pytest.raises(ConfigError, match=r"'model' must be a mapping with a 'name' string"):
        resolve_config({"model": "bicubic"})


def test_choices_are_read_from_the_registries() -> None:
    """A name registered where it is implemented is accepted by the schema; no list of names to extend."""
    with pytest.raises(
        ConfigError, match=r"'data\.val\.type' must be one of \['hr_folder', 'paired', 'sample', 'none'\]"
    ):
        resolve_config(None, ["data.val.type=probe_set"])
    DATASET_REGISTRY.register("probe_set")(object)
    MODEL_REGISTRY.register("probe_net")(type("ProbeNet", (), {"__init__": lambda self, width=4: None}))
    try:
        cfg = resolve_config(None, ["data.val.type=probe_set", "model.name=probe_net", "model.width=8"])
        assert cfg["data"]["val"]["type"] == "probe_set" and cfg["model"] == {"name": "probe_net", "width": 8}
        with pytest.raises(ConfigError, match=r"model\.depth for model 'probe_net'; allowed: width"):
            resolve_config(None, ["model.name=probe_net", "model.depth=2"])
    finally:
        DATASET_REGISTRY.pop("probe_set")
        MODEL_REGISTRY.pop("probe_net")


def test_an_unfilled_registry_leaves_the_check_to_the_build() -> None:
    empty: Registry = Registry("thing")
    opt = Opt("a", (str,), registered(empty, before=("auto",)))
    assert opt.allowed() is None
    empty.register("a")(object)
    assert opt.allowed() == ("auto", "a")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml' does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml' is not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="must hold a mapping at top level"):
        load_config(write(tmp_path, [1, 2], "list.yaml"))
    with pytest.raises(ConfigError, match=r"override 'train\.batch_size' must look like key\.sub=value"):
        load_config(None, ["train.batch_size"])


def test_saved_config_loads_back_identically(tmp_path: Path) -> None:
    cfg = resolve_config({"name": "x", "model": {"name": "bicubic", "scale": 8}}, ["train.iterations=7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_repo_configs_resolve() -> None:
    configs = sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml"))
    assert any(p.name == "demo.yaml" for p in configs)
    for path in configs:
        cfg = load_config(path)
        assert (cfg["train"]["iterations"] is None) != (cfg["train"]["epochs"] is None), path


def test_exponent_numbers_are_floats_in_files_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  optimizer: {lr: 2e-4, weight_decay: 1E-2}\n  scheduler: {min_lr: 1e-6}\n")
    cfg = load_config(path, ["train.grad_clip=5e-1", "train.iterations=1e3"])
    opt = cfg["train"]["optimizer"]
    assert (opt["lr"], opt["weight_decay"], cfg["train"]["scheduler"]["min_lr"]) == (2e-4, 1e-2, 1e-6)
    assert cfg["train"]["grad_clip"] == 0.5 and cfg["train"]["iterations"] == 1000  # integral float -> int
    assert isinstance(cfg["train"]["iterations"], int)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg
    assert resolve_config(None, ["name=1e5x"])["name"] == "1e5x"  # not a number: stays a string
    with pytest.raises(ConfigError, match=r"'train.iterations' expects int, got float 2.5"):
        resolve_config(None, ["train.iterations=2.5"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=0", "'train.batch_size' must be >= 1, got 0"),
        ("train.batch_size=-4", "'train.batch_size' must be >= 1, got -4"),
        ("train.optimizer.lr=-1e-4", "'train.optimizer.lr' must be >= 0, got -0.0001"),
        ("train.iterations=0", "'train.iterations' must be >= 1, got 0"),
        ("train.epochs=-1", "'train.epochs' must be >= 1, got -1"),
        ("train.ema=1.0", "'train.ema' must be < 1, got 1.0"),
        ("logging.save_every=0", "'logging.save_every' must be >= 1, got 0"),
        ("data.train.num_workers=-1", "'data.train.num_workers' must be >= 0, got -1"),
    ],
)
def test_out_of_range_numbers_name_key_value_and_bound(tmp_path: Path, override: str, message: str) -> None:
    path = write(tmp_path, {"name": "a"})
    with pytest.raises(ConfigError, match=re.escape(message) + r" \(in .*exp\.yaml\)"):
        load_config(path, [override])


def test_bad_override_yaml_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^override 'train.losses=\[\{': the value is not valid YAML \("):
        resolve_config(None, ["train.losses=[{"])
