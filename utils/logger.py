"""Run logging: plain-text ``train.log`` plus the console (through tqdm so progress bars stay intact)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

FORMAT = "%(asctime)s %(levelname)s %(message)s"


class TqdmHandler(logging.StreamHandler):
    """Console handler that prints above an active tqdm bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def setup_logger(log_file: str | Path | None, is_main: bool = True, name: str = "train") -> logging.Logger:
    """Logger writing to ``log_file`` and the console on the main rank; other ranks log warnings only."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    formatter = logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    console = TqdmHandler()
    console.setFormatter(formatter)
    logger.addHandler(console)
    if is_main and log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, mode="a")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger
