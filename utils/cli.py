"""Entry point wrapper for the command-line scripts: bad input prints one error line, not a traceback."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

BAD_INPUT = (OSError, ValueError, KeyError, RuntimeError)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


def os_error_message(err: OSError, path: str | Path | None = None) -> str:
    """One line for a failed file operation: ``disk full writing PATH``, ``no permission to write PATH`` ..."""
    where = path if path is not None else err.filename
    where = f" {where}" if where is not None else ""
    if err.errno in DISK_FULL:
        return f"disk full writing{where} ({err.strerror or 'no space left on device'})"
    if err.errno in NO_PERMISSION:
        return f"no permission to write{where} ({err.strerror}; read-only folder or file system?)"
    return f"cannot write{where}: {err.strerror or err}"


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's ``main``; a bad-input error exits with ``error: <message>`` (status 1)."""
    try:
        main()
    except BAD_INPUT as err:
        raise SystemExit(f"error: {err}") from None
