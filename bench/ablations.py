"""Train a list of experiment configs for one fixed budget and write one markdown comparison table.

    python -m bench.ablations CONFIG|DIR [CONFIG|DIR ...] --out TABLE.md [--iterations N]
        [--set key=value ...] [--work-dir DIR] [--val-dir HR_DIR] [--lpips-weights FILE]
        [--nproc N] [--device cpu|cuda] [--timeout S]

A folder stands for its ``*.yaml`` files except those starting with ``_`` (shared bases such as
configs/ablations/_protocol.yaml). Per row: parameters and FLOPs / MACs (metrics.complexity, selective
scan included) of one forward pass at 1x3xSxS, S = the row's data.val.hr_size; training with
train.py in a subprocess (``torchrun`` when --nproc > 1) for the budget, without in-training
validation, into ``<work_dir>/<name>``; then test.py --degrade --vif (and --lpips when the AlexNet
weights are present) on the validation HR folder with the final weights, whose summary.json gives
PSNR / SSIM / LPIPS / VIF. Train img/s = median it/s of train.log's windows after the first x batch
size x world size. ``bicubic`` rows are not trained, only scored. A row that fails shows as failed
with the reason; the other rows go on. ``TABLE.json`` next to the table holds the raw numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from data import build_dataset
from metrics import table as metric_table
from metrics.complexity import count_flops, count_parameters
from metrics.table import METRICS
from metrics.tensor import tensor_to_uint8
from model import build_model
from model.build import build_network
from utils.checkpoint import save_checkpoint
from utils.cli import ArgumentParser, run_cli
from utils.config import load_config

REPO = Path(__file__).resolve().parents[1]
UNTRAINED_MODELS = ("bicubic",)
NEVER = 10**9  # a logging period that never fires within the budget
RATE_LINE = re.compile(r"\biter (\d+)/(\d+) epoch \d+ .* ([0-9.]+) it/s\s*$")
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) ")
WORLD_LINE = re.compile(r"world size (\d+), batch size (\d+) per process")
BENCH_METRIC_OPTIONS = ("lpips_weights",)  # metric options the benches pass on to test.py


class RowError(RuntimeError):
    """One row could not be trained or scored; the message is shown in its table cell."""


@dataclass
class Row:
    """One table row: what was run and what came out (None = not measured)."""

    config: str
    name: str = ""
    model: str = ""
    status: str = "ok"
    params: int | None = None
    flops: int | None = None
    macs: int | None = None
    size: int | None = None
    scores: dict[str, float | None] = field(default_factory=dict)  # metric (metrics.table) -> test.py mean
    img_per_s: float | None = None
    notes: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m bench.ablations", description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", help="experiment YAML files, or folders of them")
    p.add_argument("--out", required=True, help="markdown table to write (raw numbers go to the .json beside it)")
    p.add_argument("--val-dir", default=None, help="HR validation images (default: export the first row's data.val)")
    return parse_run_options(p, argv, work_dir_help="run folders, test outputs, validation export")


def parse_run_options(p: argparse.ArgumentParser, argv: list[str] | None, work_dir_help: str) -> argparse.Namespace:
    """Add the options every train-and-score-each-row bench shares (this one and bench.table1), parse, check."""
    p.add_argument("--iterations", type=int, default=None, help="training budget (default: each config's)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="overrides for every row")
    p.add_argument("--work-dir", default=f"experiments/{p.prog.split('.')[-1]}", help=work_dir_help)
    metric_table.add_options(p, only=BENCH_METRIC_OPTIONS)  # --lpips-weights
    p.add_argument("--nproc", type=int, default=1, help="training processes (torchrun when > 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per training run")
    args = p.parse_args(argv)
    if args.iterations is not None and args.iterations < 1:
        p.error(f"--iterations must be >= 1, got {args.iterations}")
    if args.nproc < 1:
        p.error(f"--nproc must be >= 1, got {args.nproc}")
    return args


def expand_configs(items: list[str]) -> list[Path]:
    """Config files in the given order; a folder gives its ``*.yaml`` not starting with ``_``, sorted."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.yaml") if not p.name.startswith("_"))
            if not found:
                raise FileNotFoundError(f"config folder {item!r} holds no *.yaml row files")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"config {item!r} does not exist")
    return [p.resolve() for p in paths]


def load_row_config(path: Path, overrides: list[str], iterations: int | None) -> dict[str, Any]:
    """The resolved config of a row, with the bench's budget applied."""
    return load_config(path, [*overrides, *_budget(iterations)])


def export_val_hr(cfg: dict[str, Any], folder: Path) -> Path:
    """Write the HR images of ``cfg``'s data.val set as ``<name>.png`` into ``folder`` (for test.py --degrade)."""
    dataset = build_dataset(cfg["data"]["val"], cfg["scale"], train=False)
    if dataset is None or len(dataset) == 0:
        raise ValueError("data.val of the first config has no images (type none?); pass --val-dir HR_DIR")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(dataset)):
        item = dataset[i]
        if "hr" not in item:
            raise ValueError(f"data.val item {item['name']!r} has no HR image; pass --val-dir HR_DIR")
        Image.fromarray(tensor_to_uint8(item["hr"])).save(folder / f"{item['name']}.png")
    return folder


def first_loadable(configs: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """The first config that loads (its data.val is the shared validation set); errors if none does."""
    errors = []
    for path in configs:
        try:
            return load_row_config(path, args.set, args.iterations)
        except ValueError as err:
            errors.append(str(err))
    raise ValueError("no config loads, so there is no data.val to score on: " + "; ".join(errors))


def complexity(cfg: dict[str, Any]) -> dict[str, int]:
    """Parameters and FLOPs / MACs of the row's network at 1x3xSxS, S = data.val.hr_size (/ scale for lr_input)."""
    net = build_network(cfg)
    size = cfg["data"]["val"]["hr_size"] // (cfg["scale"] if getattr(net, "lr_input", False) else 1)
    return {"params": count_parameters(net), **count_flops(net, (size, size)), "size": size}


def train_overrides(cfg: dict[str, Any], work_dir: Path) -> list[str]:
    """Settings the bench imposes on train.py: run folder, no in-run validation, clean timing windows."""
    iterations = cfg["train"]["iterations"]
    print_every = max(1, iterations // 10) if iterations is not None else cfg["logging"]["print_every"]
    return [
        f"paths.experiments_root={work_dir}",
        "paths.resume=null",
        "data.val.type=none",
        f"logging.print_every={print_every}",
        f"logging.save_every={NEVER}",
        f"logging.sample_every={NEVER}",
        f"logging.val_every={NEVER}",
        "logging.keep_iter_checkpoints=false",
        "logging.progress_bar=false",
    ]


def _tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a command's output, log timestamps dropped, on one line."""
    kept = [LOG_PREFIX.sub("", line).strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(kept[-lines:]) or "no output"


def run_command(cmd: list[str], what: str, timeout: float | None = None) -> str:
    """Run ``cmd`` in the repository root; a non-zero exit or timeout raises RowError with its last lines."""
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RowError(f"{what} ran past --timeout {timeout:g} s") from None
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RowError(f"{what} exited with status {done.returncode}: {_tail(output)}")
    return output


def train(config: Path, overrides: list[str], nproc: int, timeout: float | None) -> None:
    """train.py on ``config`` with ``overrides`` (torchrun with ``nproc`` processes when > 1)."""
    launcher = (
        [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    )
    cmd = [*launcher, "train.py", "--config", str(config), "--overwrite", "--set", *overrides]
    run_command(cmd, "train.py", timeout)  # --overwrite: a rerun moves the previous run folder aside


def write_untrained_checkpoint(cfg: dict[str, Any], path: Path) -> None:
    """A checkpoint of a network without learned weights, so test.py scores it like the others."""
    net = build_model(cfg["model"])
    state = {"model_name": cfg["model"]["name"], "model": net.state_dict(), "ema": None, "config": cfg}
    save_checkpoint({**state, "iteration": 0, "epoch": 0, "best_psnr": None}, path)


def train_images_per_s(log_text: str) -> float:
    """Median it/s over train.log's windows after the first (warm-up), x batch size x world size."""
    rates = [float(m.group(3)) for m in map(RATE_LINE.search, log_text.splitlines()) if m]
    world = WORLD_LINE.search(log_text)
    if not rates or world is None:
        raise RowError("train.log has no 'iter ... it/s' or 'world size' line to read the speed from")
    kept = rates[1:] or rates
    return statistics.median(kept) * int(world.group(2)) * int(world.group(1))


def metric_status(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(the table's metrics that can be scored, footnotes): LPIPS only with its AlexNet backbone file at hand."""
    scored, notes = metric_table.status(args)
    return scored, list(notes.values())


def score(
    checkpoint: Path, val_dir: Path, out_dir: Path, args: argparse.Namespace, metrics: list[str]
) -> dict[str, Any]:
    """test.py --degrade with each of ``metrics`` switched on (--vif, --lpips ...) on the HR folder; its summary.json."""
    cmd = [sys.executable, "test.py", "--checkpoint", str(checkpoint), "--lr-dir", str(val_dir)]
    cmd += ["--out-dir", str(out_dir), "--degrade", "--no-progress", "--device", args.device]
    cmd += [f"--{name}" for name in metrics if METRICS[name].optional]
    for option in (o for m in metrics for o in METRICS[m].options if o.name in BENCH_METRIC_OPTIONS):
        if getattr(args, option.name) is not None:
            cmd += [option.flag, str(getattr(args, option.name))]
    run_command(cmd, "test.py")
    return json.loads((out_dir / "summary.json").read_text())


def bench_row(
    row: Row, args: argparse.Namespace, work_dir: Path, val_dir: Path, metrics: list[str], seen: set[str]
) -> None:
    """Fill ``row``: complexity, training and scoring of its config (raises at the first failing step)."""
    path = Path(row.config)
    cfg = load_row_config(path, args.set, args.iterations)
    row.name, row.model = cfg["name"], cfg["model"]["name"]
    if row.name in seen:
        raise RowError(f"name {row.name!r} is used by an earlier row (runs would share a folder); rename it")
    seen.add(row.name)
    cx = complexity(cfg)
    row.params, row.flops, row.macs, row.size = cx["params"], cx["flops"], cx["macs"], cx["size"]
    run_dir = work_dir / cfg["name"]
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    if row.model in UNTRAINED_MODELS:
        write_untrained_checkpoint(cfg, checkpoint)
        row.notes.append("not trained (no learned weights)")
    else:
        train(path, [*args.set, *train_overrides(cfg, work_dir), *_budget(args.iterations)], args.nproc, args.timeout)
        row.img_per_s = train_images_per_s((run_dir / "train.log").read_text())
    summary = score(checkpoint, val_dir, run_dir / "test", args, metrics)
    row.scores = {name: summary[name] for name in metrics}


def _budget(iterations: int | None) -> list[str]:
    return [] if iterations is None else [f"train.iterations={iterations}", "train.epochs=null"]


def _fmt(value: float | int | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def metric_header(name: str, scored: list[str], footnotes: list[str]) -> str:
    """``PSNR (dB) ↑``; a metric that is not scored points to its footnote (``LPIPS ↓ [1]``)."""
    m = METRICS[name]
    note = next((i for i, n in enumerate(footnotes, 1) if n.startswith(f"{m.label} not scored")), None)
    return f"{m.header} {m.arrow}" + (f" [{note}]" if name not in scored and note else "")


def metric_cell(row: Row, name: str, scored: list[str]) -> str:
    """The row's mean (4 decimals); ``n/a`` for a metric not scored in a row that ran."""
    if name in scored:
        return _fmt(row.scores.get(name), ".4f")
    return "n/a" if row.status == "ok" else "—"


def render_table(rows: list[Row], header: list[str], footnotes: list[str], scored: list[str]) -> str:
    """Markdown: protocol header, one line per row (a column per metric of metrics.table), footnotes."""
    metric_cols = [metric_header(name, scored, footnotes) for name in METRICS]
    cols = ["Row", "Model", "Params", "GFLOPs", "GMACs", *metric_cols, "Train img/s", "Status"]
    lines = [*header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        status = r.status + "".join(f"; {n}" for n in r.notes)
        cells = [
            r.name,
            r.model or "—",
            _fmt(r.params, ","),
            _fmt(None if r.flops is None else r.flops / 1e9, ".3f"),
            _fmt(None if r.macs is None else r.macs / 1e9, ".3f"),
            *(metric_cell(r, name, scored) for name in METRICS),
            _fmt(r.img_per_s, ".1f"),
            status,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", *(f"[{i}] {note}" for i, note in enumerate(footnotes, 1))]
    return "\n".join(lines) + "\n"


def machine() -> str:
    """The training / scoring device in words."""
    cpu = f"CPU {platform.machine()} x{os.cpu_count()}"
    if torch.cuda.is_available():
        return (
            f"{torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible), {cpu}, torch {torch.__version__}"
        )
    return f"{cpu}, torch {torch.__version__}"


def protocol_header(args: argparse.Namespace, argv: list[str], rows: list[Row], val_dir: Path, n_val: int) -> list[str]:
    """Lines above the table: budget, data, metric convention, date, machine, exact command."""
    sizes = sorted({r.size for r in rows if r.size is not None})
    budget = (
        f"{args.iterations} iterations" if args.iterations is not None else "each config's train.iterations / epochs"
    )
    return [
        "# Ablations and baselines under one protocol",
        "",
        f"- Budget: {budget}; final weights scored (no best-on-validation selection).",
        f"- Validation: {n_val} HR image(s) in `{val_dir}`, LR by PIL bicubic x-down then up (test.py --degrade).",
        "- Metrics: test.py summary.json means; PSNR / SSIM on RGB uint8 (fsr convention), VIFp on grey luminance (test.py defaults).",
        f"- Params: every parameter; GFLOPs (selective scan included) / GMACs = FLOPs / 2 at 1x3xSxS, S = {', '.join(map(str, sizes)) or '—'}.",
        "- Train img/s: median it/s of train.log windows after the first x batch x world size.",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; machine: {machine()}; test device {args.device}.",
        f"- Command: `python -m bench.ablations {shlex.join(argv)}`",
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    configs = expand_configs(args.configs)
    work_dir = Path(args.work_dir).resolve()
    val_dir = Path(args.val_dir).resolve() if args.val_dir else None
    if val_dir is not None and not val_dir.is_dir():
        raise FileNotFoundError(f"--val-dir {args.val_dir!r} does not exist or is not a folder")
    if val_dir is None:
        val_dir = export_val_hr(first_loadable(configs, args), work_dir / "val_hr")
    scored, notes = metric_status(args)
    rows: list[Row] = []
    seen: set[str] = set()
    for path in configs:
        row = Row(config=str(path), name=path.stem)
        try:
            bench_row(row, args, work_dir, val_dir, scored, seen)
        except Exception as err:  # one broken row must not lose the others
            row.status = f"failed: {err}"
        rows.append(row)
        print(f"{row.name}: {row.status}", file=sys.stderr)
    n_val = sum(1 for p in val_dir.iterdir() if p.is_file())
    write_report(render_table(rows, protocol_header(args, argv, rows, val_dir, n_val), notes, scored), rows, args.out)
    return rows


def write_report(table: str, rows: list[Any], out: str) -> None:
    """The Markdown table to ``out``, the rows beside it as JSON, and the table to stdout."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    path.with_suffix(".json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print(table)


if __name__ == "__main__":
    run_cli(main)
