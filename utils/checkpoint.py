"""Training checkpoints: one dict per file, written atomically, loaded with clear errors.

A checkpoint holds ``model_name``, ``model`` (state_dict), ``ema`` (state_dict or None),
``config`` (the resolved config), ``iteration``, ``epoch``, ``optimizer``, ``scheduler``,
``scaler``, ``rng`` and ``best_psnr``. The state is serialised in memory, written to a
temporary file in the same folder, flushed and fsync-ed, then renamed over the target, so a
crash or a full disk never leaves a half-written ``latest.pt``: the old one stays readable
until the new one is complete, and a failed write says which file and why (disk full ...).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.cli import os_error_message

REQUIRED_KEYS = ("model_name", "model", "config", "iteration")
_SHOWN_KEYS = 8
ITER_PATTERN = re.compile(r"^iter_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, unwritable or does not match the network."""


def _write_all(fd: int, data: memoryview) -> None:
    """Write every byte of ``data`` to the open file ``fd`` and fsync it (OSError on a full disk)."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (serialise, temp file in the same folder, fsync, rename).

    A failed write (disk full, read-only folder) raises ``CheckpointError`` naming ``path``; the
    file previously at ``path`` is left as it was.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        _write_all(fd, buffer.getbuffer())
        os.replace(tmp, path)
    except OSError as err:
        kept = f"; the previous {path.name} is unchanged" if path.is_file() else ""
        raise CheckpointError(os_error_message(err, path) + kept) from None
    finally:
        if tmp is not None and Path(tmp).exists():
            Path(tmp).unlink()
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


NOT_LOADED = "it holds Python objects other than tensors and plain containers, so it was not loaded (no code in it ran)"


def load_reason(err: BaseException) -> str:
    """A one-line reason from torch.load's error, without torch's advice to retry with weights_only=False
    (never safe for a file of unknown origin)."""
    text = str(err)
    if "Weights only load failed" in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else text
        detail = detail.split("Check the documentation", 1)[0].split("trusted source.", 1)[-1]
        detail = " ".join(detail.split())
        glob = re.search(r"GLOBAL ([\w.]+)", detail)
        if glob is not None or "Unsupported global" in detail:
            return f"{NOT_LOADED}: {glob.group(1) if glob else detail.split('.')[0]}"
        return f"unreadable data ({detail or 'pickle error'})"
    first = " ".join(text.split("\n", 1)[0].split()) or type(err).__name__
    return first if isinstance(err, (RuntimeError, OSError)) else f"unreadable data ({type(err).__name__}: {first})"


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` without its pickle-protocol warnings (errors: see :func:`load_reason`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; a missing, truncated or foreign file raises ``CheckpointError`` (one line)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = safe_load(path, map_location)
    except Exception as err:  # torch raises many kinds (RuntimeError, UnpicklingError, KeyError, EOFError ...)
        what = "was refused" if NOT_LOADED in load_reason(err) else "is corrupt or not a PyTorch checkpoint"
        raise CheckpointError(f"checkpoint {str(path)!r} {what}: {load_reason(err)}") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        found = sorted(state)[:_SHOWN_KEYS] if isinstance(state, dict) else type(state).__name__
        hint = ""
        if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            hint = (
                f": a bare state dict ({len(state)} tensors), not one of our checkpoints; the authors' released "
                ".pth files convert with python -m tools.convert_released --model hybrimamba|rhmc --src FILE --out OURS.pt"
            )
        raise CheckpointError(f"checkpoint {str(path)!r} lacks keys {list(REQUIRED_KEYS)}; found {found}{hint}")
    return state


def check_model_name(state: dict[str, Any], expected: str, path: str | Path) -> None:
    """Refuse a checkpoint written for another network, naming both."""
    if state["model_name"] != expected:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was trained with model {state['model_name']!r}, "
            f"but the config builds model {expected!r}"
        )


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]) -> str | None:
    """One-line summary of how ``found`` differs from ``expected`` (shapes, missing, unexpected keys), or None."""
    shape = [k for k in expected if k in found and tuple(getattr(found[k], "shape", ())) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    parts = []
    if shape:
        k = shape[0]
        parts.append(
            f"{len(shape)} of {len(expected)} tensors differ in shape, e.g. {k}: checkpoint "
            f"{tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
        )
    if missing:
        parts.append(f"{len(missing)} model tensor(s) missing from the checkpoint, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} checkpoint tensor(s) the model does not have, e.g. {unexpected[0]}")
    return "; ".join(parts) or None


def model_settings_diff(saved: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str:
    """``model.key: saved -> current`` for the model settings that differ (empty when unknown or equal)."""
    if not isinstance(saved, Mapping):
        return ""
    keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    return ", ".join(f"model.{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys)


def load_weights(
    net: nn.Module,
    weights: Mapping[str, Any],
    path: str | Path,
    what: str = "model",
    saved_model_cfg: Mapping[str, Any] | None = None,
    model_cfg: Mapping[str, Any] | None = None,
) -> None:
    """``net.load_state_dict(weights)``; a mismatch raises a short ``CheckpointError`` (counts and one example,
    plus the model settings that differ between ``saved_model_cfg`` and ``model_cfg`` when both are given)."""
    problem = state_dict_mismatch(net.state_dict(), weights)
    if problem is None:
        try:
            net.load_state_dict(weights)
            return
        except RuntimeError as err:
            problem = str(err).splitlines()[0]
    diff = model_settings_diff(saved_model_cfg, model_cfg) if model_cfg is not None else ""
    hint = f" (checkpoint vs config: {diff})" if diff else ""
    raise CheckpointError(
        f"checkpoint {str(path)!r} ({what} weights) does not fit the configured network: {problem}{hint}"
    )


def resume_candidates(ckpt_dir: str | Path) -> list[Path]:
    """latest.pt, then iter_<n>.pt newest first: the order ``--resume auto`` tries them in."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    iters = sorted(
        (int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := ITER_PATTERN.match(p.name)) and p.is_file()
    )
    latest = ckpt_dir / "latest.pt"
    return ([latest] if latest.is_file() else []) + [p for _, p in reversed(iters)]


def load_newest(ckpt_dir: str | Path) -> tuple[Path | None, dict[str, Any] | None, list[tuple[Path, str]]]:
    """The first loadable checkpoint of :func:`resume_candidates` and its state, plus (path, reason) skipped.

    (None, None, skipped) when none loads; ``skipped`` empty and no path when the folder has none.
    """
    skipped: list[tuple[Path, str]] = []
    for path in resume_candidates(ckpt_dir):
        try:
            return path, load_checkpoint(path), skipped
        except CheckpointError as err:
            skipped.append((path, str(err)))
    return None, None, skipped
