"""Training checkpoints: one dict per file, written atomically, loaded with clear errors.

A checkpoint holds ``model_name``, ``model`` (state_dict), ``ema`` (state_dict or None),
``config`` (the resolved config), ``iteration``, ``epoch``, ``optimizer``, ``scheduler``,
``scaler``, ``rng`` and ``best_psnr``. Files are written to a temporary file in the same
folder, flushed and fsync-ed, then renamed over the target, so a crash never leaves a
half-written ``latest.pt``: the old one stays readable until the new one is complete.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

REQUIRED_KEYS = ("model_name", "model", "config", "iteration")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not match the network."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; a missing, truncated or foreign file raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a PyTorch checkpoint: {err}") from err
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} lacks keys {list(REQUIRED_KEYS)}; found {found}")
    return state


def check_model_name(state: dict[str, Any], expected: str, path: str | Path) -> None:
    """Refuse a checkpoint written for another network, naming both."""
    if state["model_name"] != expected:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was trained with model {state['model_name']!r}, "
            f"but the config builds model {expected!r}"
        )
