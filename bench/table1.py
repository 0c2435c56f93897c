"""HybriMamba's Table 1 under one protocol: train and score every row, print ours beside the published values.

    python -m bench.table1 --set data.train.hr_dir=... eval.helen_hr_dir=... eval.celeba_hr_dir=...
        [--iterations N] [--rows sparnet swinir ...] [--out results/table1.md] [--config-dir configs/table1]
        [--work-dir DIR] [--lpips-weights FILE] [--nproc N] [--device cpu|cuda] [--timeout S]

Rows are the ``*.yaml`` of ``--config-dir`` except ``protocol.yaml`` (or the stems given to ``--rows``),
in Table 1's order, then any others. Each row is an ordinary training config (``base: protocol.yaml``).
Per row, with the pieces of bench.ablations: parameters and FLOPs / MACs of one forward pass at the
row's network input (the 16x16 LR for ``lr_input`` networks, else the 128x128 bicubic upsampling);
training with train.py for the budget (the config's, or ``--iterations``) without in-training
validation; then test.py --degrade --vif [--lpips] with the final weights on each evaluation set of
the protocol (``eval.helen_hr_dir``, ``eval.celeba_hr_dir``). ``bicubic`` is scored, not trained.
A row that fails (a network that is not registered, a missing folder, a crash) shows why; the
other rows go on. ``TABLE.json`` next to the table holds the raw numbers.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import ablations
from metrics.table import METRICS
from model import MODEL_REGISTRY
from utils.cli import ArgumentParser, run_cli

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = "protocol.yaml"
SETS = {"Helen": "helen_hr_dir", "CelebA": "celeba_hr_dir"}
ORDER = ("bicubic", "dic", "sparnet", "swinir", "sfmnet", "wfen", "mambair", "hybrimamba", "rhmc")
LABELS = {"dic": "DIC", "sparnet": "SPARNet", "swinir": "SwinIR", "sfmnet": "SFMNet", "wfen": "WFEN"}
LABELS |= {"bicubic": "Bicubic", "mambair": "MambaIR", "hybrimamba": "HybriMamba (Ours)", "rhmc": "RHMC"}
# HybriMamba's Table 1 (x8; shared/seeds/hybrimamba_table1_results_x8.png): params (M), FLOPs (G), then
# PSNR / SSIM / LPIPS on Helen and on CelebA. RHMC is not in the table.
PUBLISHED: dict[str, dict[str, Any]] = {
    "bicubic": {"params": None, "flops": None, "Helen": (24.07, 0.6824, 0.5271), "CelebA": (24.10, 0.6605, 0.5267)},
    "dic": {"params": 22.8, "flops": 35.5, "Helen": (26.58, 0.7837, 0.1994), "CelebA": (27.33, 0.7896, 0.1950)},
    "sparnet": {"params": 10.6, "flops": 7.1, "Helen": (27.64, 0.8173, 0.1937), "CelebA": (27.83, 0.8067, 0.1874)},
    "swinir": {"params": 11.9, "flops": 3.8, "Helen": (27.52, 0.8168, 0.2125), "CelebA": (27.75, 0.8066, 0.2068)},
    "sfmnet": {"params": 8.6, "flops": 30.6, "Helen": (27.32, 0.8056, 0.1915), "CelebA": (27.54, 0.7964, 0.1868)},
    "wfen": {"params": 6.8, "flops": 7.5, "Helen": (28.05, 0.8291, 0.1740), "CelebA": (28.16, 0.8173, 0.1730)},
    "mambair": {"params": 20.4, "flops": 5.3, "Helen": (26.18, 0.7759, 0.2301), "CelebA": (26.37, 0.7644, 0.2245)},
    "hybrimamba": {"params": 15.1, "flops": 19.7, "Helen": (28.33, 0.8375, 0.1621), "CelebA": (28.43, 0.8250, 0.1638)},
}
PUBLISHED_SCORES = ("psnr", "ssim", "lpips")  # the order of each set's triple above


@dataclass
class Row:
    """One row of the table: what was run and what came out (None = not measured)."""

    config: str
    stem: str
    name: str = ""
    model: str = ""
    status: str = "ok"
    params: int | None = None
    macs: int | None = None
    input_size: int | None = None
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m bench.table1", description=__doc__.split("\n\n")[0])
    p.add_argument("--config-dir", default=str(REPO / "configs" / "table1"), help="the row configs and protocol.yaml")
    p.add_argument("--rows", nargs="+", default=None, metavar="STEM", help="only these rows (config file stems)")
    p.add_argument("--out", default="results/table1.md", help="markdown table (raw numbers in the .json beside it)")
    return ablations.parse_run_options(p, argv, work_dir_help="run folders and test outputs")


def row_configs(config_dir: Path, rows: list[str] | None) -> list[Path]:
    """The row files: every ``*.yaml`` but the protocol (or ``rows``), Table 1's order first."""
    if not config_dir.is_dir():
        raise FileNotFoundError(f"--config-dir {str(config_dir)!r} is not a folder")
    found = {p.stem: p for p in config_dir.glob("*.yaml") if p.name != PROTOCOL}
    if rows is not None:
        missing = [r for r in rows if r not in found]
        if missing:
            raise FileNotFoundError(
                f"--rows {', '.join(missing)}: no such config in {config_dir} (rows: {', '.join(sorted(found))})"
            )
        found = {r: found[r] for r in rows}
    rank = {stem: i for i, stem in enumerate(ORDER)}
    return [found[s] for s in sorted(found, key=lambda s: (rank.get(s, len(ORDER)), s))]


def eval_sets(cfg: dict[str, Any]) -> dict[str, Path]:
    """{set: HR folder} of the protocol; a missing folder is an error naming its key."""
    sets = {}
    for name, key in SETS.items():
        folder = cfg["eval"][key]
        if folder is None or not Path(folder).is_dir():
            raise ablations.RowError(f"eval.{key} = {folder!r} is not a folder of HR test faces; set it with --set")
        sets[name] = Path(folder).resolve()
    return sets


def bench_row(row: Row, args: argparse.Namespace, work_dir: Path, metrics: list[str], seen: set[str]) -> None:
    """Fill ``row``: complexity, training, then scoring on every evaluation set (raises at the first failure)."""
    path = Path(row.config)
    cfg = ablations.load_row_config(path, args.set, args.iterations)
    row.name, row.model = cfg["name"], cfg["model"]["name"]
    if row.name in seen:
        raise ablations.RowError(f"name {row.name!r} is used by an earlier row (runs would share a folder); rename it")
    seen.add(row.name)
    cx = ablations.complexity(cfg)
    row.params, row.macs, row.input_size = cx["params"], cx["macs"], cx["size"]
    sets = eval_sets(cfg)  # after the counts: a run without the test sets still prints them
    run_dir = work_dir / cfg["name"]
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    if row.model in ablations.UNTRAINED_MODELS:
        ablations.write_untrained_checkpoint(cfg, checkpoint)
        row.notes.append("not trained")
    else:
        overrides = [*args.set, *ablations.train_overrides(cfg, work_dir), *ablations._budget(args.iterations)]
        ablations.train(path, overrides, args.nproc, args.timeout)
    for name, folder in sets.items():
        summary = ablations.score(checkpoint, folder, run_dir / f"test_{name}", args, metrics)
        row.scores[name] = {m: summary.get(m) for m in METRICS}


def _pair(ours: str, published: float | None, spec: str) -> str:
    return ours if published is None else f"{ours} ({format(published, spec)})"


def render_table(rows: list[Row], header: list[str], footnotes: list[str]) -> str:
    """Markdown in Table 1's layout: ours, the published value in parentheses."""
    cols = ["Method", "Params (M)", "GMACs"]
    for s in SETS:
        cols += [f"{s} {m.label} {m.arrow}" for m in METRICS.values()]
    cols.append("Status")
    lines = [*header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        pub = PUBLISHED.get(r.model, {})
        cells = [
            LABELS.get(r.model, r.model or r.stem),
            _pair(ablations._fmt(None if r.params is None else r.params / 1e6, ".2f"), pub.get("params"), ".1f"),
            _pair(ablations._fmt(None if r.macs is None else r.macs / 1e9, ".2f"), pub.get("flops"), ".1f"),
        ]
        for s in SETS:
            got, published = r.scores.get(s, {}), dict(zip(PUBLISHED_SCORES, pub.get(s, ())))
            for name, m in METRICS.items():
                spec = f".{m.decimals}f"
                cells.append(_pair(ablations._fmt(got.get(name), spec), published.get(name), spec))
        status = r.status + "".join(f"; {n}" for n in r.notes)
        lines.append("| " + " | ".join(ablations._cell(c) for c in [*cells, status]) + " |")
    lines += ["", *(f"[{i}] {note}" for i, note in enumerate(footnotes, 1))]
    return "\n".join(lines) + "\n"


def lr_input_rows() -> list[str]:
    """Table 1's rows whose registered network takes the 16x16 LR itself (``lr_input``), in the table's order."""
    return [LABELS[m] for m in ORDER if m in MODEL_REGISTRY and getattr(MODEL_REGISTRY[m], "lr_input", False)]


def protocol_header(args: argparse.Namespace, argv: list[str]) -> list[str]:
    budget = f"{args.iterations} iterations" if args.iterations is not None else "each row's train.iterations / epochs"
    return [
        "# HybriMamba Table 1 (x8 FSR) under one protocol: ours (published)",
        "",
        f"- Protocol: {Path(args.config_dir) / PROTOCOL}; budget: {budget}; final weights scored.",
        "- Scoring: test.py --degrade --vif [--lpips] on each HR test set (PIL bicubic x8 down, then the network "
        "input); PSNR / SSIM on Y (fsr convention), LPIPS v0.1 AlexNet, VIFp on grey.",
        "- Params: every parameter. GMACs: FLOPs / 2 (selective scan included) of one forward at the row's network "
        f"input (16x16 LR for {' / '.join(lr_input_rows())}, 128x128 bicubic upsampling otherwise); published: "
        "thop-style.",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; machine: {ablations.machine()}; "
        f"test device {args.device}.",
        f"- Command: `python -m bench.table1 {shlex.join(argv)}`",
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    configs = row_configs(Path(args.config_dir), args.rows)
    work_dir = Path(args.work_dir).resolve()
    scored, notes = ablations.metric_status(args)
    rows: list[Row] = []
    seen: set[str] = set()
    for path in configs:
        row = Row(config=str(path), stem=path.stem)
        try:
            bench_row(row, args, work_dir, scored, seen)
        except Exception as err:  # one broken row must not lose the others
            row.status = f"failed: {err}"
        rows.append(row)
        print(f"{row.stem}: {row.status}", file=sys.stderr)
    ablations.write_report(render_table(rows, protocol_header(args, argv), notes), rows, args.out)
    return rows


if __name__ == "__main__":
    run_cli(main)
