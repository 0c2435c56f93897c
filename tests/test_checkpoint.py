"""utils.checkpoint (atomic save, clear load errors, model-name check) and utils.seed RNG round trips."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import utils.checkpoint
from utils.checkpoint import (
    CheckpointError,
    check_model_name,
    load_checkpoint,
    load_newest,
    resume_candidates,
    save_checkpoint,
    state_dict_mismatch,
)
from utils.sampler import ResumableSampler
from utils.seed import ItemSeeded, preserved_rng, rng_state, set_rng_state


def state(iteration: int) -> dict:
    return {
        "model_name": "tiny",
        "model": {"w": torch.full((3,), float(iteration))},
        "ema": None,
        "config": {"name": "x"},
        "iteration": iteration,
        "rng": rng_state(),
    }


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "latest.pt"
    save_checkpoint(state(5), path)
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 5 and torch.equal(loaded["model"]["w"], torch.full((3,), 5.0))
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]


def test_crash_mid_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "latest.pt"
    save_checkpoint(state(1), path)

    def partial_save(obj: object, f: object) -> None:
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk died")

    monkeypatch.setattr(utils.checkpoint.torch, "save", partial_save)
    with pytest.raises(OSError, match="disk died"):
        save_checkpoint(state(2), path)
    assert load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_missing_and_corrupt_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.pt' does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    save_checkpoint(state(3), bad)
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    with pytest.raises(CheckpointError, match=r"bad\.pt' is corrupt"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match=r"lacks keys .*found \['weights'\]"):
        load_checkpoint(other)


def test_garbage_files_give_one_line_without_torch_advice(tmp_path: Path) -> None:
    files = {"random.pt": bytes(range(256)) * 3, "text.pt": b"hello, not a checkpoint\n", "empty.pt": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        msg = str(info.value)
        assert msg.startswith(f"checkpoint {str(tmp_path / name)!r} is corrupt or not a PyTorch checkpoint: ")
        assert "\n" not in msg and "weights_only" not in msg and len(msg) < 300, msg


def test_disk_full_is_named_and_the_old_file_stays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "latest.pt"
    save_checkpoint(state(1), path)

    def full(fd: int, data: memoryview) -> None:
        os.write(fd, bytes(data[:10]))
        os.close(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(utils.checkpoint, "_write_all", full)
    with pytest.raises(
        CheckpointError, match=r"^disk full writing .*latest\.pt \(No space left on device\); the previous"
    ):
        save_checkpoint(state(2), path)
    assert load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_state_dict_mismatch_is_one_summary_line() -> None:
    model = {
        "a.weight": torch.zeros(8, 3),
        "a.bias": torch.zeros(8),
        "b.weight": torch.zeros(4, 8),
        "c": torch.zeros(1),
    }
    ckpt = {
        "a.weight": torch.zeros(16, 3),
        "a.bias": torch.zeros(16),
        "b.weight": torch.zeros(4, 8),
        "d": torch.zeros(1),
    }
    assert state_dict_mismatch(model, ckpt) == (
        "2 of 4 tensors differ in shape, e.g. a.weight: checkpoint (16, 3) vs model (8, 3); "
        "1 model tensor(s) missing from the checkpoint, e.g. c; 1 checkpoint tensor(s) the model does not have, e.g. d"
    )
    assert state_dict_mismatch(model, dict(model)) is None


def test_resume_candidates_newest_first(tmp_path: Path) -> None:
    for name in ("iter_10.pt", "iter_9.pt", "iter_100.pt", "best.pt", "latest.pt", "iter_x.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in resume_candidates(tmp_path)] == ["latest.pt", "iter_100.pt", "iter_10.pt", "iter_9.pt"]
    save_checkpoint(state(9), tmp_path / "iter_9.pt")
    path, loaded, skipped = load_newest(tmp_path)
    assert path == tmp_path / "iter_9.pt" and loaded["iteration"] == 9
    assert [p.name for p, _ in skipped] == ["latest.pt", "iter_100.pt", "iter_10.pt"]
    assert load_newest(tmp_path / "none") == (None, None, [])


def test_model_name_mismatch_names_both(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="trained with model 'tiny', but the config builds model 'rhmc'"):
        check_model_name(state(0), "rhmc", tmp_path / "a.pt")
    check_model_name(state(0), "tiny", tmp_path / "a.pt")


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(2).tolist()


def test_rng_state_survives_save_and_load(tmp_path: Path) -> None:
    np.random.randn()  # leaves a cached gaussian in numpy's state
    path = tmp_path / "rng.pt"
    save_checkpoint(state(0), path)
    expected = draws()
    draws()
    set_rng_state(load_checkpoint(path)["rng"])
    assert draws() == expected


def test_preserved_rng_leaves_generators_untouched() -> None:
    saved = rng_state()
    expected = draws()
    set_rng_state(saved)
    with preserved_rng():
        draws()
    assert draws() == expected


class GlobalRandomItems(torch.utils.data.Dataset):
    """Items drawn from the global python, numpy and torch generators, like naive augmentation."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple:
        return index, random.random(), float(np.random.rand()), float(torch.rand(()))


def test_item_seeded_depends_only_on_seed_epoch_index() -> None:
    data = ItemSeeded(GlobalRandomItems(), seed=7)
    a = data[(2, 4)]
    before = draws()
    torch.rand(5)  # move the global generators in between
    assert data[(2, 4)] == a and data[(3, 4)] != a and data[(2, 5)] != a
    set_rng_state_after = draws()
    assert set_rng_state_after != before  # the wrapper restored, not reseeded, the main RNGs
    assert ItemSeeded(GlobalRandomItems(), seed=8)[(2, 4)] != a


def test_resumable_sampler_skips_consumed_batches() -> None:
    data = list(range(11))
    full = ResumableSampler(data, batch_size=2, num_replicas=2, rank=1, seed=5)
    full.set_position(3, 0)
    order = list(full)
    assert full.batches_per_epoch == 3 and len(order) == 6 and all(e == 3 for e, _ in order)
    part = ResumableSampler(data, batch_size=2, num_replicas=2, rank=1, seed=5)
    part.set_position(3, 2)
    assert list(part) == order[4:] and len(part) == 2
    other_epoch = ResumableSampler(data, batch_size=2, num_replicas=2, rank=1, seed=5)
    other_epoch.set_position(4, 0)
    assert [i for _, i in other_epoch] != [i for _, i in order]
    with pytest.raises(ValueError, match=r"batches_done=4 outside \[0, 3\]"):
        part.set_position(0, 4)
    with pytest.raises(ValueError, match=r"train.batch_size must be >= 1, got 0"):
        ResumableSampler(data, batch_size=0, num_replicas=1, rank=0, seed=5)
