"""The metric table (pyiqa's rule: every metric's facts in one place).

One :class:`Metric` per metric: the key of its column in results.csv / summary.json, its label and
unit, whether lower is better, its digits in paper tables, whether it is off unless asked
(``--lpips``), its command-line options, how its scorer is built (once: LPIPS loads its network
here, not per image), the convention text it writes into summary.json, and whether validation
during training scores it. test.py, metrics.compare, bench.ablations, bench.table1 and train.py's
validation read this table; adding a metric is one entry here plus its module.

Scorers take two HxWx3 uint8 RGB arrays (prediction, ground truth) and return a float. Options
are read by name from any object with attributes (argparse's namespace) or a mapping; a missing
option takes its default.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metrics import psnr_ssim, vif

Scorer = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Option:
    """One command-line option of a metric (``--crop-border``): its name (the argparse dest) and settings."""

    name: str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    type: Callable[[str], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Metric:
    """The facts of one metric; see the module docstring."""

    name: str
    label: str
    build: Callable[[Callable[[str], Any], str], Scorer]  # (option getter, device) -> scorer, built once
    conventions: Callable[[Callable[[str], Any]], dict[str, str]]  # summary.json facts
    unit: str = ""
    lower_is_better: bool = False
    decimals: int = 4
    optional: bool = False  # scored only with --<name>
    options: tuple[Option, ...] = ()
    validation: bool = False  # scored by train.py's validation (cheap, no model)
    check: Callable[[Callable[[str], Any]], str] | None = None  # footnote, or FileNotFoundError: cannot be scored
    convention_key: str = field(default="")  # the summary.json key of its one-line convention text

    @property
    def header(self) -> str:
        """Column header: ``PSNR (dB)``, ``SSIM``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_is_better else "↑"

    @property
    def latex(self) -> str:
        return self.label + (r"$\downarrow$" if self.lower_is_better else r"$\uparrow$")

    def best(self, values: Iterable[float]) -> float:
        values = list(values)
        return min(values) if self.lower_is_better else max(values)

    def format(self, value: float) -> str:
        return f"{value:.{self.decimals}f}"


def _psnr_ssim_conventions(get: Callable[[str], Any]) -> dict[str, str]:
    return {"convention": psnr_ssim.describe(get("convention"), get("crop_border"))}


def _build_psnr(get: Callable[[str], Any], device: str) -> Scorer:
    convention, crop = get("convention"), get("crop_border")
    return lambda pred, gt: psnr_ssim.calculate_psnr(pred, gt, convention, crop)


def _build_ssim(get: Callable[[str], Any], device: str) -> Scorer:
    convention, crop = get("convention"), get("crop_border")
    return lambda pred, gt: psnr_ssim.calculate_ssim(pred, gt, convention, crop)


def _build_lpips(get: Callable[[str], Any], device: str) -> Scorer:
    # lazy: the lpips package and torchvision load only when LPIPS is asked for
    from metrics import lpips

    model = lpips.build_lpips(get("lpips_net"), get("lpips_weights"), device, flag="--lpips-weights")
    return lambda pred, gt: lpips.calculate_lpips(pred, gt, device=str(device), model=model)


def _check_lpips(get: Callable[[str], Any]) -> str:
    from metrics import lpips  # lpips loads torchvision; only when LPIPS is asked for

    path = lpips.backbone_weights_path(get("lpips_net"), get("lpips_weights"), flag="--lpips-weights")
    return f"LPIPS v0.1 {BACKBONE_NAMES[get('lpips_net')]}, backbone weights {path}."


BACKBONE_NAMES = {"alex": "AlexNet", "vgg": "VGG"}


def _build_vif(get: Callable[[str], Any], device: str) -> Scorer:
    channel = get("vif_channel")
    return lambda pred, gt: vif.calculate_vif(pred, gt, channel=channel)


CONVENTION = Option("convention", "fsr", "PSNR / SSIM convention (metrics.psnr_ssim)", psnr_ssim.CONVENTIONS)
CROP_BORDER = Option("crop_border", 0, "pixels cut from each side before PSNR / SSIM", type=int)
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            name="psnr",
            label="PSNR",
            unit="dB",
            decimals=2,
            build=_build_psnr,
            conventions=_psnr_ssim_conventions,
            options=(CONVENTION, CROP_BORDER),
            validation=True,
            convention_key="convention",
        ),
        Metric(
            name="ssim",
            label="SSIM",
            build=_build_ssim,
            conventions=_psnr_ssim_conventions,
            options=(CONVENTION, CROP_BORDER),
            validation=True,
            convention_key="convention",
        ),
        Metric(
            name="lpips",
            label="LPIPS",
            lower_is_better=True,
            optional=True,
            build=_build_lpips,
            conventions=lambda get: {
                "lpips_convention": f"LPIPS v0.1 {get('lpips_net')}, RGB in [-1, 1] from the saved uint8"
            },
            options=(
                Option("lpips_net", "alex", "LPIPS backbone", ("alex", "vgg")),
                Option("lpips_weights", None, "torchvision backbone file (default: the torch hub cache)"),
            ),
            check=_check_lpips,
            convention_key="lpips_convention",
        ),
        Metric(
            name="vif",
            label="VIF",
            optional=True,
            build=_build_vif,
            conventions=lambda get: {
                "vif_channel": get("vif_channel"),
                "vif_convention": vif.describe(get("vif_channel")),
            },
            options=(Option("vif_channel", "gray", "VIF luminance (default gray)", vif.CHANNELS),),
            convention_key="vif_convention",
        ),
    )
}
VALIDATION = tuple(name for name, m in METRICS.items() if m.validation)


def getter(opts: Any) -> Callable[[str], Any]:
    """Option value by name from a namespace or mapping; the option's default when absent or None-less."""
    defaults = {o.name: o.default for m in METRICS.values() for o in m.options}

    def get(name: str) -> Any:
        found = opts.get(name) if isinstance(opts, Mapping) else getattr(opts, name, None)
        return defaults[name] if found is None else found

    return get


def add_options(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """The ``--<name>`` switch of each optional metric and every metric option (each once), or those named in ``only``."""
    seen: set[str] = set()
    for m in METRICS.values():
        if m.optional and (only is None or m.name in only):
            parser.add_argument(f"--{m.name}", action="store_true", help=f"score {m.label} too")
        for o in m.options:
            if o.name in seen or (only is not None and o.name not in only):
                continue
            seen.add(o.name)
            kwargs = {"choices": o.choices} if o.choices else {"type": o.type} if o.type else {}
            parser.add_argument(o.flag, default=o.default, help=o.help, **kwargs)


def selected(opts: Any, always: Sequence[str] = ()) -> list[str]:
    """The metrics to score, in table order: every non-optional one, those switched on in ``opts``, and ``always``."""
    get = opts.get if isinstance(opts, Mapping) else lambda k: getattr(opts, k, False)
    return [n for n, m in METRICS.items() if not m.optional or n in always or get(n)]


def build_scorers(names: Sequence[str], opts: Any = None, device: str = "cpu") -> dict[str, Scorer]:
    """{name: scorer} for ``names`` (models such as LPIPS built here, once); errors before any image is read."""
    get = getter(opts or {})
    return {n: METRICS[n].build(get, device) for n in names}


def conventions(names: Sequence[str], opts: Any = None) -> dict[str, str]:
    """The summary.json convention facts of ``names`` (``convention``, ``lpips_convention``, ``vif_channel`` ...)."""
    get, out = getter(opts or {}), {}
    for n in names:
        out.update(METRICS[n].conventions(get))
    return out


def status(opts: Any = None, names: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """(metrics that can be scored, {metric: footnote}) for metrics with a prerequisite (LPIPS's backbone file)."""
    get, ok, notes = getter(opts or {}), [], {}
    for n in names or list(METRICS):
        check = METRICS[n].check
        if check is None:
            ok.append(n)
            continue
        try:
            notes[n] = check(get)
            ok.append(n)
        except FileNotFoundError as err:
            notes[n] = f"{METRICS[n].label} not scored (n/a): {err}"
    return ok, notes
