"""Run logging: plain-text ``train.log`` plus the console (through tqdm so progress bars stay intact).

The ``data`` and ``model`` loggers (skipped images, image conversions, the scan backend) share
the run's handlers, so their notices reach train.log too. Until the run folder exists (it is
created only after the config, data and checkpoint are checked) records are kept in memory and
written to train.log when :func:`open_log_file` attaches it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

FORMAT = "%(asctime)s %(levelname)s %(message)s"
SHARED = ("data", "model", "utils.image_io")  # loggers that share the run's handlers


class TqdmHandler(logging.StreamHandler):
    """Console handler that prints above an active tqdm bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class BufferHandler(logging.Handler):
    """Keeps records until a log file exists (see :func:`open_log_file`)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class LogFileHandler(logging.FileHandler):
    """train.log handler: a failed write (disk full) is reported once in one console line, not as a traceback."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            err = sys.exc_info()[1]
            print(
                f"could not write {self.baseFilename}: {err}; log lines continue on the console only", file=sys.stderr
            )


def _formatter() -> logging.Formatter:
    return logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S")


def _loggers(name: str) -> list[logging.Logger]:
    return [logging.getLogger(n) for n in (name, *SHARED)]


def setup_logger(log_file: str | Path | None, is_main: bool = True, name: str = "train") -> logging.Logger:
    """Logger writing to ``log_file`` (or a memory buffer until :func:`open_log_file`) and the console on the main
    rank; other ranks log warnings only. The ``data``, ``model`` and ``utils.image_io`` loggers share its handlers."""
    logger = logging.getLogger(name)
    close_logger(name)
    console = TqdmHandler()
    console.setFormatter(_formatter())
    handlers: list[logging.Handler] = [console]
    if is_main:
        handlers.append(BufferHandler() if log_file is None else _file_handler(Path(log_file)))
    logger.propagate = False
    for lg in _loggers(name):
        lg.setLevel(logging.INFO if is_main else logging.WARNING)
        for handler in handlers:
            lg.addHandler(handler)
    return logger


def close_logger(name: str = "train") -> None:
    """Detach and close the run's handlers from ``name`` and the shared loggers (end of a run)."""
    for lg in _loggers(name):
        for handler in list(lg.handlers):
            lg.removeHandler(handler)
            handler.close()


def _file_handler(path: Path) -> LogFileHandler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = LogFileHandler(path, mode="a")
    handler.setFormatter(_formatter())
    return handler


def open_log_file(logger: logging.Logger, log_file: str | Path) -> None:
    """Attach ``log_file`` to ``logger`` (and the shared loggers), first writing the records buffered so far."""
    buffers = [h for h in logger.handlers if isinstance(h, BufferHandler)]
    if not buffers:
        return  # not the main rank, or a file is attached already
    handler = _file_handler(Path(log_file))
    for record in buffers[0].records:
        handler.handle(record)
    for lg in _loggers(logger.name):
        for buffer in buffers:
            lg.removeHandler(buffer)
        lg.addHandler(handler)
