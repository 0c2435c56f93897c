"""Host reads of tensor values per training iteration (each one a device sync on a GPU).

    .venv/bin/python -m bench.host_syncs [--iterations 12] [--print-every 5]

Trains configs/hybrimamba_tiny.yaml (16x16 sample faces, losses l1 + wavelet_l1) through
``train.main`` in a temporary folder while counting every ``Tensor.item / tolist / numpy /
__float__ / __int__ / __bool__ / __index__`` called from this repository's code, per iteration and
per call site. Left out: torch's own calls (e.g. the optimizer's CPU step counters) and data/ (the
loader's augmentation draws, CPU tensors in the DataLoader, no device involved). An iteration runs
from the start of its step to the start of the next; iterations that print, validate, sample or
save are counted apart. On CPU this counts the reads; torch.cuda.set_sync_debug_mode counts
syncs on a GPU (that also flags blocking host-to-device copies such as ``torch.tensor(..., device=cuda)``).
"""

from __future__ import annotations

import collections
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml

import train
from utils.cli import ArgumentParser

REPO = Path(__file__).resolve().parents[1]
READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def count_reads(counts: collections.Counter, where: list, sites: collections.Counter) -> Iterator[None]:
    """Count tensor reads issued from repository files into ``counts[where[0]]`` (and ``sites[file:line]``)."""
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    skip = (str(REPO / ".venv"), str(REPO / "data"), __file__)

    def counting(name: str):
        real = originals[name]

        def read(self, *args, **kwargs):
            frame = sys._getframe(1)
            caller = frame.f_code.co_filename
            if caller.startswith(str(REPO)) and not caller.startswith(skip):
                counts[where[0]] += 1
                sites[f"{Path(caller).relative_to(REPO)}:{frame.f_lineno} {name}"] += 1
            return real(self, *args, **kwargs)

        return read

    for name in READS:
        setattr(torch.Tensor, name, counting(name))
    try:
        yield
    finally:
        for name, real in originals.items():
            setattr(torch.Tensor, name, real)


@contextlib.contextmanager
def per_iteration(counts: collections.Counter, sites: collections.Counter) -> Iterator[None]:
    """Count reads per iteration: Trainer.step marks the iteration it starts (reads before the first step: 0)."""
    where = [0]
    real_step = train.Trainer.step

    def step(self, *args, **kwargs):
        where[0] = self.iteration + 1
        return real_step(self, *args, **kwargs)

    train.Trainer.step = step
    try:
        with count_reads(counts, where, sites):
            yield
    finally:
        train.Trainer.step = real_step


def run(iterations: int, print_every: int, root: Path) -> tuple[collections.Counter, collections.Counter]:
    """(reads per iteration, reads per call site) of one tiny training run in ``root``."""
    cfg = yaml.safe_load((REPO / "configs" / "hybrimamba_tiny.yaml").read_text())
    cfg["data"]["train"]["hr_size"] = cfg["data"]["val"]["hr_size"] = 16
    cfg["train"].update(iterations=iterations, losses=[{"type": "l1"}, {"type": "wavelet_l1", "weight": 0.5}])
    cfg["logging"] = {
        "print_every": print_every,
        "val_every": 10**6,
        "save_every": 10**6,
        "sample_every": 10**6,
        "tensorboard": False,
        "progress_bar": False,
    }
    cfg["paths"] = {"experiments_root": str(root)}
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    counts: collections.Counter = collections.Counter()
    sites: collections.Counter = collections.Counter()
    with per_iteration(counts, sites):
        if train.main(["--config", str(path)]) != 0:
            raise SystemExit("training failed")
    return counts, sites


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--print-every", type=int, default=5)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        counts, sites = run(args.iterations, args.print_every, Path(tmp))
    printing = [i for i in range(1, args.iterations + 1) if i % args.print_every == 0 or i == args.iterations]
    plain = [i for i in range(1, args.iterations + 1) if i not in printing]
    print(f"host reads from repository code per iteration ({args.iterations} iterations, 2 loss terms)")
    print(f"  set-up (before the first step):  {counts[0]}")
    print(f"  plain iterations ({len(plain)}):  {[counts[i] for i in plain]}")
    print(f"  iterations that print ({len(printing)}, incl. the final save):  {[counts[i] for i in printing]}")
    print("call sites (whole run):")
    for site, n in sites.most_common():
        print(f"  {n:5d}  {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
