"""RHMC's README command, runnable by path: ``python metrics/calculate_lpips.py --pred_dir P --gt_dir G``
(the same as ``python -m metrics.lpips``; every flag of that script works here)."""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: the repository root, not metrics/, goes first on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from metrics.lpips import main
from utils.cli import run_cli

if __name__ == "__main__":
    run_cli(main)
