"""Experiment configuration: one YAML per experiment, dotted overrides, strict validation.

The schema (:mod:`utils.schema`) lists every accepted key with its default, type and allowed values. A key
that is not in the schema, or a value of the wrong type or outside its choices, is an error
that names the dotted key and what is allowed. ``model`` keys beyond ``name`` are checked
against the registered network's constructor (``MODEL_REGISTRY``, filled when ``model`` is imported). Numbers in exponent form without a dot (``2e-4``,
``1E5``) are floats in files and ``--set`` values (plain YAML 1.1 reads them as strings), and
an integral float such as ``1e5`` is accepted for an integer key.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import yaml

from utils.registry import MODEL_REGISTRY, constructor_kwargs
from utils.schema import SCHEMA, Opt, default_config

AUTHORS_CONFIGS = {  # the config paths of the authors' READMEs and scripts -> ours
    name: "that is the RHMC repository's config; here: configs/rhmc_x8_celeba.yaml (paper) or configs/rhmc_released.yaml"
    for name in ("model/RHMC/config.yaml", "model/HMC/config.yaml")
}


class ConfigError(ValueError):
    """A config file, key or value that is not accepted."""


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
    choices = opt.allowed()
    if choices is not None and value not in choices:
        raise ConfigError(f"config key {key!r} must be one of {list(choices)}, got {value!r}")
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
    """Finite values; with the networks registered (``model`` imported), a registered name and its constructor's
    keywords only (``model.build`` checks the same when it builds)."""
    bad = _non_finite(model, "model")
    if bad is not None:
        raise ConfigError(f"config key {bad[0]!r} must be a finite number, got {bad[1]!r}")
    if not MODEL_REGISTRY:
        return
    name = model["name"]
    if name not in MODEL_REGISTRY:
        names = ", ".join(sorted(MODEL_REGISTRY))
        raise ConfigError(f"config key 'model.name': unknown model {name!r}; registered: {names}")
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
