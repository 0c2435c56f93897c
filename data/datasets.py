"""Face SR datasets. Items: {"lr": (3, H, W) bicubic-upsampled LR, "lr_small": (3, H/s, W/s)
when known, "hr": (3, H, W) when known, "name": file stem}, float tensors in [0, 1]; with a
landmark file (:mod:`data.landmarks`) also "heatmap": (K, H/4, W/4) landmark heatmaps.

Each dataset is a ``DATASET_REGISTRY`` entry under its ``data.*.type`` name, built by
``build_dataset`` through ``from_section(section, scale, key, train, augment, landmarks)`` from a
full config section; a new type is one registered class here.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from data.augment import HRAugment
from data.degrade import degrade, fit_hr, resize, to_tensor
from data.landmarks import HEATMAP_STRIDE, Landmarks, LandmarkSet, fit_face, heatmaps, hr_points
from data.sample import face_crops
from utils.image_io import DataError, list_images, open_header, pair_by_stem, read_rgb_image, scan
from utils.registry import DATASET_REGISTRY

log = logging.getLogger(__name__)


class _FaceDataset(Dataset, ABC):
    """Shared item logic: ``len = sources * repeat``; with ``skip_bad`` an undecodable file is
    replaced by the next readable one (logged), otherwise its DataError propagates."""

    def __init__(self, count: int, repeat: int, skip_bad: bool, key: str):
        if repeat < 1:
            raise DataError(f"{key}.repeat must be >= 1, got {repeat}")
        self.count, self.repeat, self.skip_bad, self.key = count, repeat, skip_bad, key

    def __len__(self) -> int:
        return self.count * self.repeat

    @abstractmethod
    def _load(self, index: int) -> dict[str, Any]:
        """The item of source ``index`` (0 <= index < count)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= self.count
        for attempt in range(self.count):
            try:
                return self._load((index + attempt) % self.count)
            except DataError as err:
                if not self.skip_bad:
                    raise DataError(f"{err} (set {self.key}.skip_bad=true to skip bad files)") from None
                log.warning("skipping bad file: %s", err)
        raise DataError(f"{self.key}: no readable image left in the dataset")


def _lr_hr_item(hr: Image.Image, scale: int, kernel: str, name: str) -> dict[str, Any]:
    small, lr = degrade(hr, scale, kernel)
    return {"lr": to_tensor(lr), "lr_small": to_tensor(small), "hr": to_tensor(hr), "name": name}


def _require(section: dict[str, Any], key: str, name: str) -> str:
    if not section.get(name):
        raise DataError(f"{key}.{name} is required for {key}.type={section['type']!r}")
    return section[name]


def _heatmap(points: Any, size: tuple[int, int], sigma: float) -> torch.Tensor:
    return torch.from_numpy(heatmaps(points, size, HEATMAP_STRIDE, sigma))


@DATASET_REGISTRY.register("hr_folder")
class HRFolderDataset(_FaceDataset):
    """A folder of HR face photos: fit to ``hr_size``, optional augmentation, LR made on the fly.

    With ``landmarks`` (no augmentation), each face is cropped by its annotation (DIC pickle bbox)
    or fitted, its points follow, and items carry their "heatmap".
    """

    def __init__(
        self,
        hr_dir: str | Path,
        hr_size: int = 128,
        scale: int = 8,
        fit: str = "center_crop",
        kernel: str = "pil",
        augment: HRAugment | None = None,
        skip_bad: bool = False,
        repeat: int = 1,
        max_images: int | None = None,
        key: str = "data.train",
        landmarks: LandmarkSet | None = None,
        heatmap_sigma: float = 1.0,
    ):
        files = list_images(hr_dir, f"{key}.hr_dir")
        self.files, _ = scan(
            files,
            minimum=(hr_size, hr_size),
            key=f"{key}.hr_size",
            skip_bad=skip_bad,
            skip_hint=f"set {key}.skip_bad=true",
            what=f"{key}.hr_dir {str(hr_dir)!r}",
            limit=max_images,
        )
        super().__init__(len(self.files), repeat, skip_bad, key)
        self.hr_size, self.scale, self.fit, self.kernel, self.augment = hr_size, scale, fit, kernel, augment
        if landmarks is not None:
            if augment is not None:
                raise DataError(f"{key}.flip / {key}.random_scale do not move landmarks; set both false")
            landmarks.check_covers([p.stem for p in self.files], key)
        self.landmarks, self.heatmap_sigma = landmarks, heatmap_sigma

    @classmethod
    def from_section(
        cls,
        section: dict[str, Any],
        scale: int,
        key: str,
        train: bool,
        augment: HRAugment | None,
        landmarks: LandmarkSet | None,
    ) -> HRFolderDataset:
        """The dataset of a full ``data.train`` / ``data.val`` section (``build_dataset``)."""
        return cls(
            hr_dir=_require(section, key, "hr_dir"),
            hr_size=section["hr_size"],
            scale=scale,
            fit=section["fit"],
            kernel=section["resize_kernel"],
            augment=augment,
            skip_bad=section["skip_bad"],
            repeat=section["repeat"],
            max_images=section["max_images"],
            key=key,
            landmarks=landmarks,
            heatmap_sigma=section["heatmap_sigma"],
        )

    def _load(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        if self.landmarks is None:
            hr = fit_hr(read_rgb_image(path), self.hr_size, self.fit)
            if self.augment is not None:
                hr = self.augment(hr)
            return _lr_hr_item(hr, self.scale, self.kernel, path.stem)
        img = read_rgb_image(path)
        if self.landmarks.frame == "source":
            face = self.landmarks.get(path.stem)
        else:
            face = Landmarks(hr_points(self.landmarks, path.stem, img.size))
        hr, points = fit_face(img, face, self.hr_size, self.fit)
        item = _lr_hr_item(hr, self.scale, self.kernel, path.stem)
        item["heatmap"] = _heatmap(points, hr.size, self.heatmap_sigma)
        return item


@DATASET_REGISTRY.register("paired")
class PairedDataset(_FaceDataset):
    """LR folder (+ optional HR folder) paired by file stem, extension-insensitive.

    LR images either ``scale`` times smaller than HR (bicubic-upsampled here, ``lr_small`` kept)
    or already upsampled to the HR size (used as is, no ``lr_small``); one kind per folder.
    Without ``hr_dir`` the LR images are taken as small and items have no ``hr``. ``landmarks``
    (in HR pixels: the JSON ``data.prepare --landmarks`` writes) add a "heatmap" per item.
    """

    def __init__(
        self,
        lr_dir: str | Path,
        hr_dir: str | Path | None = None,
        scale: int = 8,
        kernel: str = "pil",
        skip_bad: bool = False,
        max_images: int | None = None,
        key: str = "data.val",
        landmarks: LandmarkSet | None = None,
        heatmap_sigma: float = 1.0,
    ):
        hint = f"set {key}.skip_bad=true"
        lr_files = list_images(lr_dir, f"{key}.lr_dir")
        if hr_dir is None:
            lr_kept, _ = scan(
                lr_files,
                minimum=None,
                key="",
                skip_bad=skip_bad,
                skip_hint=hint,
                what=f"{key}.lr_dir {str(lr_dir)!r}",
                limit=max_images,
            )
            self.pairs: list[tuple[Path, Path | None]] = [(p, None) for p in lr_kept]
            self.upsampled = False
        else:
            hr_files = list_images(hr_dir, f"{key}.hr_dir")
            pairs = pair_by_stem(lr_files, hr_files, roles=("LR", "HR"), folders=(str(lr_dir), str(hr_dir)))
            self.pairs, self.upsampled = self._check_pairs(
                pairs, scale=scale, skip_bad=skip_bad, hint=hint, key=key, limit=max_images
            )
        super().__init__(len(self.pairs), 1, skip_bad, key)
        self.scale, self.kernel = scale, kernel
        if landmarks is not None:
            if hr_dir is None or landmarks.frame != "hr":
                raise DataError(
                    f"{key}.landmarks {landmarks.path!r}: a paired set needs an hr_dir and landmarks in HR pixels "
                    "(the landmarks.json that data.prepare --landmarks writes)"
                )
            landmarks.check_covers([hr.stem for _, hr in self.pairs], key)
        self.landmarks, self.heatmap_sigma = landmarks, heatmap_sigma

    @classmethod
    def from_section(
        cls,
        section: dict[str, Any],
        scale: int,
        key: str,
        train: bool,
        augment: HRAugment | None,
        landmarks: LandmarkSet | None,
    ) -> PairedDataset:
        """The dataset of a full section; pairs are used as they are (``augment`` does not apply)."""
        return cls(
            lr_dir=_require(section, key, "lr_dir"),
            hr_dir=section.get("hr_dir"),
            scale=scale,
            kernel=section["resize_kernel"],
            skip_bad=section["skip_bad"],
            max_images=section["max_images"],
            key=key,
            landmarks=landmarks,
            heatmap_sigma=section["heatmap_sigma"],
        )

    @staticmethod
    def _check_pairs(
        pairs: list[tuple[Path, Path]], *, scale: int, skip_bad: bool, hint: str, key: str, limit: int | None
    ) -> tuple[list[tuple[Path, Path]], bool]:
        kept, kinds, bad = [], {}, []
        for lr_path, hr_path in pairs:
            if limit is not None and len(kept) >= limit:
                break
            try:
                (lw, lh), (hw, hh) = open_header(lr_path), open_header(hr_path)
                if (lw, lh) == (hw, hh):
                    kind = "upsampled"
                elif (lw * scale, lh * scale) == (hw, hh):
                    kind = "small"
                else:
                    raise DataError(
                        f"LR image {str(lr_path)!r} is {lw}x{lh} but its HR {str(hr_path)!r} is {hw}x{hh}; "
                        f"expected LR {hw // scale}x{hh // scale} (HR / scale {scale}) or {hw}x{hh} (pre-upsampled)"
                    )
            except DataError as err:
                if not skip_bad:
                    raise DataError(f"{err} ({hint} to skip bad files)") from None
                bad.append(str(err))
                continue
            kinds.setdefault(kind, lr_path)
            kept.append((lr_path, hr_path))
        if bad:
            log.warning("skipped %d bad pair(s) in %s: %s", len(bad), key, "; ".join(bad[:10]))
        if not kept:
            raise DataError(f"{key}: no usable LR/HR pair")
        if len(kinds) > 1:
            raise DataError(
                f"{key}.lr_dir mixes LR images of HR size (e.g. {kinds['upsampled'].name}) and HR/{scale} size "
                f"(e.g. {kinds['small'].name}); use one kind per folder"
            )
        return kept, "upsampled" in kinds

    def _load(self, index: int) -> dict[str, Any]:
        lr_path, hr_path = self.pairs[index]
        lr_img = read_rgb_image(lr_path)
        item: dict[str, Any] = {"name": lr_path.stem}
        if self.upsampled:
            item["lr"] = to_tensor(lr_img)
        else:
            w, h = lr_img.size
            item["lr"] = to_tensor(resize(lr_img, (w * self.scale, h * self.scale), self.kernel))
            item["lr_small"] = to_tensor(lr_img)
        if hr_path is not None:
            hr = read_rgb_image(hr_path)
            item["hr"] = to_tensor(hr)
            if self.landmarks is not None:
                item["heatmap"] = _heatmap(
                    hr_points(self.landmarks, hr_path.stem, hr.size), hr.size, self.heatmap_sigma
                )
        return item


@DATASET_REGISTRY.register("sample")
class SampleDataset(_FaceDataset):
    """Built-in demo set (:mod:`data.sample`): 16 train / 4 val astronaut face crops by default."""

    def __init__(
        self,
        hr_size: int = 128,
        scale: int = 8,
        train: bool = True,
        kernel: str = "pil",
        augment: HRAugment | None = None,
        repeat: int = 1,
        count: int | None = None,
        key: str = "data.train",
    ):
        split = "train" if train else "val"
        count = (16 if train else 4) if count is None else count
        if count < 1:
            raise DataError(f"{key}.max_images must be >= 1 for the sample set, got {count}")
        self.images = [fit_hr(c, hr_size, "resize") for c in face_crops(count, split)]
        self.names = [f"astronaut_{split}_{i:02d}" for i in range(count)]
        super().__init__(count, repeat, False, key)
        self.scale, self.kernel, self.augment = scale, kernel, augment

    @classmethod
    def from_section(
        cls,
        section: dict[str, Any],
        scale: int,
        key: str,
        train: bool,
        augment: HRAugment | None,
        landmarks: LandmarkSet | None,
    ) -> SampleDataset:
        """The demo set of a full section (its train or val split); it has no landmarks."""
        if landmarks is not None:
            raise DataError(f"{key}.landmarks: the built-in sample set has no landmarks; use hr_folder or paired")
        return cls(
            hr_size=section["hr_size"],
            scale=scale,
            train=train,
            kernel=section["resize_kernel"],
            augment=augment,
            repeat=section["repeat"],
            count=section["max_images"],
            key=key,
        )

    def _load(self, index: int) -> dict[str, Any]:
        hr = self.images[index]
        if self.augment is not None:
            hr = self.augment(hr)
        return _lr_hr_item(hr, self.scale, self.kernel, self.names[index])
