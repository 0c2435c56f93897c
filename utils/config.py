"""Experiment configuration: one YAML per experiment, dotted overrides, strict validation.

The schema below lists every accepted key with its default, type and allowed values. A key
that is not in the schema, or a value of the wrong type or outside its choices, is an error
that names the dotted key and what is allowed. ``model`` keys beyond ``name`` are checked
against the registered network's constructor. Numbers in exponent form without a dot (``2e-4``,
``1E5``) are floats in files and ``--set`` values (plain YAML 1.1 reads them as strings), and
an integral float such as ``1e5`` is accepted for an integer key.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from model.build import COMPILE_MODES
from model.ssm import BACKENDS

AUTHORS_CONFIGS = {  # the config paths of the authors' READMEs and scripts -> ours
    name: "that is the RHMC repository's config; here: configs/rhmc_x8_celeba.yaml (paper) or configs/rhmc_released.yaml"
    for name in ("model/RHMC/config.yaml", "model/HMC/config.yaml")
}


class ConfigError(ValueError):
    """A config file, key or value that is not accepted."""


@dataclass(frozen=True)
class Opt:
    """One leaf of the schema: default value, accepted types, optional closed set of values, numeric range."""

    default: Any
    types: tuple[type, ...]
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    low: float | None = None
    high: float | None = None
    high_open: bool = False


def _o(
    default: Any,
    *types: type,
    choices: tuple[Any, ...] | None = None,
    nullable: bool = False,
    low: float | None = None,
    high: float | None = None,
    high_open: bool = False,
) -> Opt:
    """A schema leaf; ``low``/``high`` bound numbers (inclusive; ``high_open`` excludes ``high``)."""
    return Opt(default, types or (type(default),), choices, nullable or default is None, low, high, high_open)


NUM = (int, float)
MAX_SIDE = 8192  # image side (pixels): one 8192^2 RGB float batch item is 0.8 GB
MAX_BATCH = 65_536
MAX_COUNT = 10**9  # iterations, epochs, image counts, logging intervals

SCHEMA: dict[str, Any] = {
    "name": _o("experiment", str),
    "seed": _o(0, int),
    "scale": _o(8, int, choices=(2, 4, 8, 16)),
    "model": _o({"name": "bicubic"}, dict),
    "ssm": {
        "backend": _o("auto", str, choices=BACKENDS),
        "deterministic": _o(False, bool),  # bitwise-reproducible scan gradients (triton: no atomics; not mamba_ssm)
    },
    "data": {
        "value_range": _o([0, 1], list, choices=([0, 1], [-1, 1])),  # network input/output range (utils.value_range)
        "train": {
            "type": _o("hr_folder", str, choices=("hr_folder", "paired", "sample")),
            "hr_dir": _o(None, str),
            "lr_dir": _o(None, str),
            "hr_size": _o(128, int, low=1, high=MAX_SIDE),
            "fit": _o("center_crop", str, choices=("center_crop", "resize")),
            "resize_kernel": _o("pil", str, choices=("pil", "matlab")),
            "flip": _o(True, bool),
            "random_scale": _o(True, bool),
            "scale_range": _o([1.0, 1.3], list),
            "skip_bad": _o(False, bool),
            "num_workers": _o(2, int, low=0, high=256),
            "repeat": _o(1, int, low=1, high=100_000),
            "max_images": _o(None, int, low=1, high=MAX_COUNT),
            "landmarks": _o(None, str),  # landmark file of the set (data.landmarks): heatmaps for DIC
            "heatmap_sigma": _o(1.0, *NUM, low=0),
        },
        "val": {
            "type": _o("sample", str, choices=("hr_folder", "paired", "sample", "none")),
            "hr_dir": _o(None, str),
            "lr_dir": _o(None, str),
            "hr_size": _o(128, int, low=1, high=MAX_SIDE),
            "fit": _o("center_crop", str, choices=("center_crop", "resize")),
            "resize_kernel": _o("pil", str, choices=("pil", "matlab")),
            "skip_bad": _o(False, bool),
            "max_images": _o(None, int, low=1, high=MAX_COUNT),
            "landmarks": _o(None, str),
            "heatmap_sigma": _o(1.0, *NUM, low=0),
        },
    },
    "train": {
        "batch_size": _o(4, int, low=1, high=MAX_BATCH),
        "iterations": _o(None, int, low=1, high=MAX_COUNT),
        "epochs": _o(None, int, low=1, high=MAX_COUNT),
        "optimizer": {
            "type": _o("adamw", str, choices=("adam", "adamw")),
            "lr": _o(4e-4, *NUM, low=0),
            "betas": _o([0.9, 0.999], list),
            "weight_decay": _o(0.0, *NUM, low=0),
            "weight_decay_policy": _o("weights_only", str, choices=("weights_only", "all")),  # all = released codes
        },
        "scheduler": {
            "type": _o("multistep", str, choices=("multistep", "cosine", "constant")),
            "unit": _o("epoch", str, choices=("epoch", "iter")),
            "milestones": _o([], list),
            "gamma": _o(0.5, *NUM, low=0),
            "warmup": _o(0, int, low=0, high=MAX_COUNT),
            "min_lr": _o(0.0, *NUM, low=0),
        },
        "losses": _o([{"type": "l1", "weight": 1.0}], list),
        "amp": _o("none", str, choices=("none", "bf16", "fp16")),
        "ema": _o(0.0, *NUM, low=0, high=1, high_open=True),
        "grad_clip": _o(0.0, *NUM, low=0),
        "accumulate": _o(1, int, low=1),  # micro-batches per optimizer update (gradient accumulation)
        "grad_checkpoint": _o("none", str, choices=("none", "blocks")),  # recompute blocks in the backward
        "compile": _o("none", str, choices=COMPILE_MODES),  # torch.compile of the network (model.build)
    },
    "logging": {
        "print_every": _o(10, int, low=1, high=MAX_COUNT),
        "val_every": _o(500, int, low=1, high=MAX_COUNT),
        "save_every": _o(500, int, low=1, high=MAX_COUNT),
        "keep_iter_checkpoints": _o(True, bool),
        "sample_every": _o(500, int, low=1, high=MAX_COUNT),
        "tensorboard": _o(True, bool),
        "progress_bar": _o(True, bool),
    },
    "eval": {  # HR test sets that bench.table1 scores (configs/table1/protocol.yaml)
        "helen_hr_dir": _o(None, str),
        "celeba_hr_dir": _o(None, str),
    },
    "paths": {
        "experiments_root": _o("experiments", str),
        "resume": _o(None, str),
    },
}


def _defaults(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: _defaults(v) if isinstance(v, dict) else copy.deepcopy(v.default) for k, v in schema.items()}


def default_config() -> dict[str, Any]:
    """The full config with every default filled in."""
    return _defaults(SCHEMA)


def _check_leaf(key: str, opt: Opt, value: Any) -> Any:
    """The accepted value (an integral float given for an int key becomes an int), else ConfigError."""
    if value is None:
        if not opt.nullable:
            raise ConfigError(f"config key {key!r} may not be null; expected {_typename(opt)}")
        return None
    bad = _non_finite(value, key)
    if bad is not None:
        raise ConfigError(f"config key {bad[0]!r} must be a finite number, got {bad[1]!r}")
    if isinstance(value, float) and opt.types == (int,) and value.is_integer():
        value = int(value)
    ok = isinstance(value, opt.types) and not (isinstance(value, bool) and bool not in opt.types)
    if not ok:
        raise ConfigError(f"config key {key!r} expects {_typename(opt)}, got {type(value).__name__} {value!r}")
    if opt.choices is not None and value not in opt.choices:
        raise ConfigError(f"config key {key!r} must be one of {list(opt.choices)}, got {value!r}")
    if opt.low is not None and value < opt.low:
        raise ConfigError(f"config key {key!r} must be >= {opt.low}, got {value!r}")
    if opt.high is not None and (value >= opt.high if opt.high_open else value > opt.high):
        raise ConfigError(f"config key {key!r} must be {'<' if opt.high_open else '<='} {opt.high}, got {value!r}")
    return value


def _non_finite(value: Any, key: str) -> tuple[str, float] | None:
    """(dotted key, value) of the first NaN / inf inside ``value`` (lists and mappings searched), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (key, value)
    items = enumerate(value) if isinstance(value, list) else value.items() if isinstance(value, dict) else ()
    for k, v in items:
        found = _non_finite(v, f"{key}[{k}]" if isinstance(value, list) else f"{key}.{k}")
        if found is not None:
            return found
    return None


def _check_name(name: str) -> None:
    """The run name is one folder name under ``paths.experiments_root`` (the run folder is root/name)."""
    if name in ("", ".", "..") or any(sep in name for sep in ("/", "\\", "\0")):
        raise ConfigError(
            f"config key 'name' must be one folder name under paths.experiments_root "
            f"(no '/' or '\\', not '.' or '..'), got {name!r}"
        )


def _typename(opt: Opt) -> str:
    return " or ".join(t.__name__ for t in opt.types)


def _merge(base: dict[str, Any], update: dict[str, Any], schema: dict[str, Any], prefix: str) -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(
                f"unknown config key {dotted!r}; allowed under {prefix[:-1] or 'top level'}: {', '.join(schema)}"
            )
        spec = schema[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {dotted!r} is a section; expected a mapping, got {value!r}")
            _merge(base[key], value, spec, dotted + ".")
        else:
            base[key] = copy.deepcopy(_check_leaf(dotted, spec, value))


class NumberLoader(yaml.SafeLoader):
    """YAML safe loader that also reads ``2e-4``, ``1E5``, ``-3e+2`` as floats (YAML 1.2 style)."""


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with exponent numbers read as floats (:class:`NumberLoader`)."""
    return yaml.load(text, Loader=NumberLoader)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
    return key.strip().split("."), value


def _nested(path: list[str], value: Any) -> dict[str, Any]:
    for part in reversed(path):
        value = {part: value}
    return value


def resolve_config(user: dict[str, Any] | None, overrides: list[str] = ()) -> dict[str, Any]:
    """Defaults <- user mapping <- dotted overrides, validated; model kwargs checked too."""
    cfg = default_config()
    if user:
        if not isinstance(user, dict):
            raise ConfigError(f"a config must be a mapping at top level, got {type(user).__name__}")
        user = dict(user)
        model = user.pop("model", None)
        _merge(cfg, user, SCHEMA, "")
        if model is not None:
            _set_model(cfg, model)
    for item in overrides:
        path, value = parse_override(item)
        if path[0] == "model":
            model = copy.deepcopy(cfg["model"])
            if len(path) == 1:
                model = value
            else:
                model.update(_nested(path[1:], value))
            _set_model(cfg, model)
        else:
            _merge(cfg, _nested(path, value), SCHEMA, "")
    _check_name(cfg["name"])
    _check_model(cfg["model"])
    return cfg


def _set_model(cfg: dict[str, Any], model: Any) -> None:
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ConfigError(f"config key 'model' must be a mapping with a 'name' string, got {model!r}")
    cfg["model"] = copy.deepcopy(model)


def _check_model(model: dict[str, Any]) -> None:
    import model as _registered  # noqa: F401  (fills the registry)
    from model.registry import list_models
    from utils.registry import MODEL_REGISTRY, constructor_kwargs

    bad = _non_finite(model, "model")
    if bad is not None:
        raise ConfigError(f"config key {bad[0]!r} must be a finite number, got {bad[1]!r}")
    name = model["name"]
    if name not in list_models():
        raise ConfigError(f"config key 'model.name': unknown model {name!r}; registered: {', '.join(list_models())}")
    allowed = constructor_kwargs(MODEL_REGISTRY.get(name))
    unknown = sorted(set(model) - set(allowed) - {"name"})
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join('model.' + k for k in unknown)} for model {name!r}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML experiment mapping; a top-level ``base: other.yaml`` (relative to this file) is
    read first and this file's keys are deep-merged over it, except that a ``model`` section naming
    another network replaces the base's ``model`` section."""
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder; expected a YAML file")
    if not path.is_file():
        hint = AUTHORS_CONFIGS.get(path.as_posix().removeprefix("./"), "")
        raise ConfigError(f"config file {str(path)!r} does not exist" + (f"; {hint}" if hint else ""))
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at top level, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"config key 'base' in {str(path)!r} must be a file path, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in seen:
        raise ConfigError(f"config file {str(path)!r}: 'base' chain loops back to {str(base_path)!r}")
    parent = _read_yaml(base_path, (*seen, path.resolve()))
    merged = _deep_merge(parent, data)
    own_model, parent_model = data.get("model"), parent.get("model")
    if isinstance(own_model, dict) and isinstance(parent_model, dict):
        if "name" in own_model and own_model["name"] != parent_model.get("name"):
            merged["model"] = copy.deepcopy(own_model)  # another network: the base's model.* do not apply
    return merged


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict[str, Any]:
    """Read a YAML experiment file (or only defaults when ``path`` is None) and apply overrides."""
    user = None if path is None else _read_yaml(Path(path))
    try:
        return resolve_config(user, overrides)
    except ConfigError as err:
        where = f" (in {path})" if path is not None else ""
        raise ConfigError(f"{err}{where}") from None


def save_config(cfg: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
