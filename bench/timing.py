"""Wall-clock timing shared by the benchmarks: device sync, median of repeats, readable units."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(
    run: Callable[[], object], device: torch.device, repeats: int, budget_s: float = math.inf, warmup: bool = False
) -> float:
    """Median wall time of up to ``repeats`` runs (after one untimed run if ``warmup``); stops once ``budget_s`` is spent."""
    if warmup:
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt_time(seconds: float, digits: int = 1) -> str:
    """``12.3 ms`` below one second, ``1.23 s`` above."""
    return f"{seconds * 1e3:.{digits}f} ms" if seconds < 1 else f"{seconds:.2f} s"
