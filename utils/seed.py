"""Seeding and random-number-generator state for exactly resumable training.

What exact resume relies on:

- the main process RNGs (python ``random``, numpy, torch CPU, CUDA) are seeded with
  ``seed + rank`` once and then only move with training (dropout, ...); their states go into
  every checkpoint (``rng_state`` / ``set_rng_state``);
- validation and sample grids run inside ``preserved_rng()`` so they never move them;
- the dataset's own randomness (augmentation, synthetic images) is made a function of
  (seed, epoch, index) by ``ItemSeeded``: before each item the global python, numpy and torch
  generators are seeded from those three numbers, and (in the main process) restored after,
  so it does not matter whether the dataset draws from the global RNGs, or how many
  DataLoader workers there are.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from several integers (seed, epoch, index ...)."""
    return int(np.random.SeedSequence([p % 2**63 for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def rng_state() -> dict[str, Any]:
    """States of every global generator, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": (int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(
        (np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"], has_gauss, gauss)
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (validation, sampling) without moving any global generator."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


class ItemSeeded(Dataset):
    """Wraps a dataset so item ``index`` of ``epoch`` draws the same random numbers every run.

    Indices are ``(epoch, index)`` pairs, as yielded by ``ResumableSampler``.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        item_seed = derive_seed(self.seed, epoch, index)
        in_worker = get_worker_info() is not None
        saved = None if in_worker else (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(item_seed)
        np.random.seed(item_seed % 2**32)
        torch.random.default_generator.manual_seed(item_seed)
        try:
            return self.dataset[index]
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])
