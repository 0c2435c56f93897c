"""A distributed sampler that can start mid-epoch, for exact resume."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (order seeded by (seed, epoch)) that skips already-consumed batches.

    It yields ``(epoch, index)`` pairs for ``utils.seed.ItemSeeded``; with one process it is a
    plain seeded shuffle. ``set_position(epoch, batches_done)`` makes the next pass start
    after ``batches_done`` batches of ``epoch``, in the same order as an uninterrupted run.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int, rank: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {batch_size}")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.skip = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def set_position(self, epoch: int, batches_done: int) -> None:
        if not 0 <= batches_done <= self.batches_per_epoch:
            raise ValueError(f"batches_done={batches_done} outside [0, {self.batches_per_epoch}]")
        self.set_epoch(epoch)
        self.skip = batches_done * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.skip :]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.skip
