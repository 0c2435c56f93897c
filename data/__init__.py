"""Datasets, degradation and augmentation for x8 face SR (CelebA / Helen folders, demo set).

``build_dataset(section, scale, train)`` turns a ``data.train`` / ``data.val`` config section
into a Dataset (or ``None`` for ``type: none``):

- ``hr_folder``: HR photos in ``hr_dir``, fitted to ``hr_size``; LR made on the fly (bicubic
  down by ``scale`` and back up); with ``train=True``, random flip / random scale per section.
- ``paired``: ``lr_dir`` (+ ``hr_dir``) paired by file stem; LR small or pre-upsampled.
- ``sample``: the built-in public-domain demo set (16 train / 4 val astronaut face crops).

``landmarks: FILE`` (hr_folder, paired) adds landmark heatmaps to every item (:mod:`data.landmarks`).
"""

from __future__ import annotations

import logging
from typing import Any

from torch.utils.data import Dataset

from data.augment import HRAugment, check_scale_range
from data.datasets import HRFolderDataset, PairedDataset, SampleDataset
from data.degrade import degrade, fit_hr, to_tensor
from data.imresize import imresize
from data.landmarks import read_landmarks
from utils.image_io import DataError
from utils.registry import DATASET_REGISTRY, RESIZE_KERNEL_REGISTRY
from utils.schema import default_config

log = logging.getLogger(__name__)


def _section(section: dict[str, Any], train: bool) -> tuple[dict[str, Any], str]:
    key = "data.train" if train else "data.val"
    defaults = default_config()["data"]
    allowed = set(defaults["train"]) | set(defaults["val"])
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise DataError(
            f"unknown key(s) {', '.join(f'{key}.{k}' for k in unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    merged = {**defaults["train" if train else "val"], **section}
    merged.setdefault("flip", False)
    merged.setdefault("random_scale", False)
    merged.setdefault("repeat", 1)
    merged.setdefault("max_images", None)
    return merged, key


def build_dataset(section: dict[str, Any], scale: int, train: bool) -> Dataset | None:
    """Dataset for a ``data.train`` (``train=True``) or ``data.val`` section; ``None`` for type none.

    ``type`` names a dataset of ``DATASET_REGISTRY`` (:mod:`data.datasets`). Augmentation (``flip``,
    ``random_scale`` in ``scale_range``) is applied only with ``train=True``.
    """
    cfg, key = _section(section, train)
    kind, hr_size, kernel = cfg["type"], cfg["hr_size"], cfg["resize_kernel"]
    if kind == "none":
        return None
    if kind not in DATASET_REGISTRY:
        raise DataError(f"{key}.type must be one of {[*DATASET_REGISTRY, 'none']}, got {kind!r}")
    if kernel not in RESIZE_KERNEL_REGISTRY:
        raise DataError(f"{key}.resize_kernel must be one of {list(RESIZE_KERNEL_REGISTRY)}, got {kernel!r}")
    if hr_size < 1 or hr_size % scale:
        raise DataError(f"{key}.hr_size={hr_size} must be a positive multiple of the scale {scale}")
    max_images = cfg["max_images"]
    if max_images is not None and max_images < 1:
        raise DataError(f"{key}.max_images must be >= 1 or null, got {max_images}")
    augment = None
    if train and (cfg["flip"] or cfg["random_scale"]):
        try:
            augment = HRAugment(cfg["flip"], cfg["random_scale"], cfg.get("scale_range", (1.0, 1.0)))
        except ValueError as err:
            raise DataError(f"{key}.{err}") from None
    landmarks = None
    if cfg.get("landmarks"):
        if not cfg["heatmap_sigma"] > 0:
            raise DataError(f"{key}.heatmap_sigma must be > 0, got {cfg['heatmap_sigma']}")
        landmarks = read_landmarks(cfg["landmarks"])
    dataset = DATASET_REGISTRY.get(kind).from_section(
        cfg, scale=scale, key=key, train=train, augment=augment, landmarks=landmarks
    )
    log.info("%s: %s with %d item(s), x%d, %s kernel, augment=%s", key, kind, len(dataset), scale, kernel, augment)
    return dataset


__all__ = [
    "DataError",
    "HRAugment",
    "HRFolderDataset",
    "PairedDataset",
    "SampleDataset",
    "build_dataset",
    "check_scale_range",
    "degrade",
    "fit_hr",
    "imresize",
    "to_tensor",
]
