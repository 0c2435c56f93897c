"""The experiment config schema: every accepted key with its default, type and allowed values.

Pure declarations (no YAML, nothing above ``utils``): :mod:`utils.config` reads and checks configs
against it, :mod:`data` takes its sections' defaults from it. Choices that name implementations
come from the registries (:mod:`utils.registry`), read when a value is checked. A registry is
filled when the module implementing its entries is imported (``model``: networks, scan backends;
``data``: datasets, resize kernels, fits; ``utils.scheduler``: schedules), and the entry points
import them before they load a config. While a registry is still empty its key is not checked
here; the build (``model.build``, ``data.build_dataset``, ``utils.scheduler``) checks it always.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from utils.registry import (
    DATASET_REGISTRY,
    FIT_REGISTRY,
    RESIZE_KERNEL_REGISTRY,
    SCAN_BACKEND_REGISTRY,
    SCHEDULER_REGISTRY,
    Registry,
)
from utils.value_range import VALUE_RANGES

Choices = tuple[Any, ...] | Callable[[], tuple[Any, ...] | None]
COMPILE_MODES = ("none", "default", "max-autotune")  # torch.compile modes (train.compile, test.py --compile)


@dataclass(frozen=True)
class Opt:
    """One leaf of the schema: default value, accepted types, optional closed set of values, numeric range."""

    default: Any
    types: tuple[type, ...]
    choices: Choices | None = None
    nullable: bool = False
    low: float | None = None
    high: float | None = None
    high_open: bool = False

    def allowed(self) -> tuple[Any, ...] | None:
        """The accepted values now (None: any value of the type, or a registry not filled yet)."""
        return self.choices() if callable(self.choices) else self.choices


def registered(registry: Registry, before: tuple[str, ...] = (), after: tuple[str, ...] = ()) -> Choices:
    """Choices read from ``registry`` when a value is checked (``before`` + names + ``after``); None while empty."""
    return lambda: (*before, *registry.names(), *after) if registry else None


def _o(
    default: Any,
    *types: type,
    choices: Choices | None = None,
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
        "backend": _o("auto", str, choices=registered(SCAN_BACKEND_REGISTRY, before=("auto",))),
        "deterministic": _o(False, bool),  # bitwise-reproducible scan gradients (triton: no atomics; not mamba_ssm)
    },
    "data": {
        "value_range": _o([0, 1], list, choices=VALUE_RANGES),  # network input/output range (utils.value_range)
        "train": {
            "type": _o("hr_folder", str, choices=registered(DATASET_REGISTRY)),
            "hr_dir": _o(None, str),
            "lr_dir": _o(None, str),
            "hr_size": _o(128, int, low=1, high=MAX_SIDE),
            "fit": _o("center_crop", str, choices=registered(FIT_REGISTRY)),
            "resize_kernel": _o("pil", str, choices=registered(RESIZE_KERNEL_REGISTRY)),
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
            "type": _o("sample", str, choices=registered(DATASET_REGISTRY, after=("none",))),
            "hr_dir": _o(None, str),
            "lr_dir": _o(None, str),
            "hr_size": _o(128, int, low=1, high=MAX_SIDE),
            "fit": _o("center_crop", str, choices=registered(FIT_REGISTRY)),
            "resize_kernel": _o("pil", str, choices=registered(RESIZE_KERNEL_REGISTRY)),
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
            "type": _o("multistep", str, choices=registered(SCHEDULER_REGISTRY)),
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
