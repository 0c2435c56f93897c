"""Entry point wrapper for the command-line scripts: bad input prints one error line, not a traceback."""

from __future__ import annotations

from collections.abc import Callable

BAD_INPUT = (OSError, ValueError, KeyError, RuntimeError)


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's ``main``; a bad-input error exits with ``error: <message>`` (status 1)."""
    try:
        main()
    except BAD_INPUT as err:
        raise SystemExit(f"error: {err}") from None
