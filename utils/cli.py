"""Command-line helpers of every entry point: one flag style, and bad input as one error line, not a traceback.

Flag style: ``--kebab-case`` (argparse's and torchrun's convention: ``--nproc-per-node``), shown in
``--help`` and the docs. The ``--snake_case`` spelling of every flag is accepted as an alias
(``--lr_dir`` = ``--lr-dir``), so commands written before the change, or the authors' way, still
run: :class:`ArgumentParser` registers the kebab spelling and rewrites snake ones before parsing.
The parsed names (``args.lr_dir``) are argparse's, underscores, in both spellings.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Sequence
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


def kebab(flag: str) -> str:
    """``--lr_dir`` -> ``--lr-dir`` (the value of ``--flag=value`` untouched); anything else unchanged."""
    if not flag.startswith("--") or flag == "--":
        return flag
    name, sep, value = flag.partition("=")
    return name.replace("_", "-") + sep + value


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser with the flag style above: options are registered as ``--kebab-case`` and an
    argument list's ``--snake_case`` flags are read as their kebab spelling (up to a bare ``--``)."""

    def add_argument(self, *names: str, **kwargs: object) -> argparse.Action:
        return super().add_argument(*(kebab(n) for n in names), **kwargs)

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        args = list(sys.argv[1:] if args is None else args)
        end = args.index("--") if "--" in args else len(args)
        return super().parse_known_args([*map(kebab, args[:end]), *args[end:]], namespace)
