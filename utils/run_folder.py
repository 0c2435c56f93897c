"""Run-folder ownership: one run per ``experiments/<name>/``, held by a lock file with pid and host.

A fresh run (no ``--resume``) needs a folder that does not exist or is empty; an existing run is
continued with ``--resume auto`` or moved aside (never deleted) with ``--overwrite`` to
``<name>.old-<YYYYmmdd-HHMMSS>``. ``run.lock`` records the owner's pid, host and start time;
a second live run into the same folder is refused, and a lock left by a process that no
longer runs on this host is reported and taken over. A lock from another host cannot be
checked and is refused, naming the file to delete once that run is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from utils.cli import os_error_message

LOCK_NAME = "run.lock"


class RunFolderError(RuntimeError):
    """A run folder that this run may not use (held by another run, holds an old run, unwritable)."""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` runs on this host (and, when ``started`` is known, is the same process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    now = _process_start(pid)
    return started is None or now is None or now == started


@dataclass
class RunLock:
    """The lock file this process holds on a run folder; ``release()`` removes it."""

    path: Path
    pid: int

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("pid") == self.pid:
                self.path.unlink()
        except (OSError, ValueError):
            pass


def _lock_record() -> dict[str, object]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "process_start": _process_start(pid),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _read_lock(path: Path) -> dict[str, object]:
    try:
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _create_lock(path: Path) -> bool:
    """Create ``path`` exclusively with this process's record; False when it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(_lock_record(), f)
    return True


def live_lock_owner(folder: Path) -> str | None:
    """``pid P on host H, started T`` when ``folder/run.lock`` is held by a live run (or one on another host,
    which cannot be checked); None when there is no lock or its owner no longer runs."""
    path = folder / LOCK_NAME
    if not path.is_file():
        return None
    owner = _read_lock(path)
    pid, host = owner.get("pid"), owner.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid, owner.get("process_start")):
        return None
    return f"pid {pid} on host {host}, started {owner.get('started', '?')}, lock file {path}"


def acquire_lock(run_dir: Path, notes: list[str]) -> RunLock:
    """Take ``run_dir/run.lock``; a live owner is an error, a dead one on this host is reported in ``notes``."""
    path = run_dir / LOCK_NAME
    for _ in range(3):
        if _create_lock(path):
            return RunLock(path, os.getpid())
        owner = _read_lock(path)
        pid, host, since = owner.get("pid"), owner.get("host"), owner.get("started", "?")
        who = f"pid {pid} on host {host}, started {since}"
        if host != socket.gethostname() or not isinstance(pid, int):
            raise RunFolderError(
                f"run folder {run_dir} is locked by {path} ({who}), which cannot be checked from here; "
                f"if that run is gone, delete {path}, or pick another name"
            )
        if pid == os.getpid() or pid_alive(pid, owner.get("process_start")):
            raise RunFolderError(
                f"run folder {run_dir} is in use by a running training ({who}); "
                "wait for it to finish, or pick another name (--set name=...)"
            )
        notes.append(f"took over the stale lock {path} left by {who}, which no longer runs")
        path.unlink(missing_ok=True)
    raise RunFolderError(f"could not take the lock {path}: another process keeps creating it")


def describe_run(run_dir: Path) -> str:
    """What an existing run folder holds, e.g. ``latest.pt, 3 iter_*.pt, config.yaml, train.log``."""
    ckpts = run_dir / "checkpoints"
    names = sorted(p.name for p in ckpts.iterdir()) if ckpts.is_dir() else []
    parts = [n for n in ("latest.pt", "best.pt") if n in names]
    n_iter = sum(n.startswith("iter_") for n in names)
    parts += [f"{n_iter} iter_*.pt"] if n_iter else []
    parts += [p.name for p in sorted(run_dir.iterdir()) if p.name not in ("checkpoints", LOCK_NAME)]
    return ", ".join(parts) or "files"


def holds_a_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` has anything besides a lock file (and empty sub-folders)."""
    if not run_dir.is_dir():
        return False
    return any(p.name != LOCK_NAME and (p.is_file() or any(p.rglob("*"))) for p in run_dir.iterdir())


def aside_name(run_dir: Path) -> Path:
    """``<run_dir>.old-<timestamp>`` (with a counter when that exists too)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
    return target


def claim(run_dir: Path, continuing: bool, overwrite: bool, notes: list[str]) -> RunLock:
    """Create / lock ``run_dir`` for this run (see the module docstring); messages for the log go to ``notes``.

    ``continuing``: the run resumes this folder's own checkpoint (``--resume``), so its content stays.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot create run folder {run_dir}: {os_error_message(err)}") from None
    try:
        lock = acquire_lock(run_dir, notes)
    except OSError as err:
        raise RunFolderError(f"cannot create the lock file in run folder {run_dir}: {os_error_message(err)}") from None
    try:
        if holds_a_run(run_dir) and not continuing:
            if not overwrite:
                raise RunFolderError(
                    f"run folder {run_dir} already holds a run ({describe_run(run_dir)}); continue it with "
                    "--resume auto, pick another name (--set name=...), or pass --overwrite to move it aside"
                )
            target = aside_name(run_dir)
            os.replace(run_dir, target)  # our lock moves along, so no other run can slip in meanwhile
            (target / LOCK_NAME).unlink()
            notes.append(f"--overwrite: moved the previous run {run_dir} to {target} (nothing deleted)")
            run_dir.mkdir()
            lock = acquire_lock(run_dir, notes)
    except OSError as err:
        lock.release()
        raise RunFolderError(f"cannot prepare run folder {run_dir}: {os_error_message(err)}") from None
    except RunFolderError:
        lock.release()
        raise
    return lock
