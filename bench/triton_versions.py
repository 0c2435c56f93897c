"""Check one Triton version against this project's kernels, from a private folder (not CI: ~200 MB a version).

    .venv/bin/python -m bench.triton_versions 3.2.0 [--target /tmp/triton-3.2.0] [--cases NAME ...]

Installs ``triton==VERSION`` (and, below 3.7, ``numpy<2``: the interpreters of triton 3.0-3.6 need it)
with ``pip install --target`` into its own folder, then, with that folder first on PYTHONPATH: imports it,
runs the interpreter cases (``tests.triton_interpreted``; SS2D's fused core: ``tests.cross_interpreted``)
and compiles every model kernel, unfused and fused, for sm_80 and sm_90 with ``bench.triton_compile``
(which rebuilds each version's JIT specialisation: an AttrsDescriptor of two kinds in 3.0-3.1 and 3.2,
attributes by argument path from 3.3). Prints one table row: version, cases passed, kernels compiled,
forward / backward registers, kernels with spills (unfused and fused apart).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from utils.cli import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], target: Path, interpret: bool, timeout: int = 3600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]), OMP_NUM_THREADS="1")
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


INTERPRETED = ("tests.triton_interpreted", "tests.cross_interpreted")  # the unfused scan; SS2D's fused core


def _interpreted(module: str, target: Path, cases: list[str]) -> str:
    """``module``'s interpreter cases (those named in ``cases``, or all) under ``target``'s triton: passed / run."""
    got = _run(["-m", module, *cases], target, True)
    if got.returncode != 0:
        return "fails: " + (got.stderr.strip().splitlines() or ["?"])[-1][:100]
    res = json.loads(got.stdout.splitlines()[-1])
    ok = sum(all(v["excess"] <= 0 for v in r.values()) for r in res.values())
    return f"{ok}/{len(res)} pass"


def summarise(rows: list[dict]) -> str:
    """Compile rows -> per family (unfused, fused SS2D core): kernels, forward / backward register range, spills."""
    parts = []
    for label, family in (("kernels", [r for r in rows if not r["cross"]]), ("fused", [r for r in rows if r["cross"]])):
        if not family:
            continue
        regs = []
        for kind in ("fwd", "bwd"):
            got = [r["regs"] for r in family if r["kernel"].endswith(kind)]
            regs.append(f"{kind} {min(got)}-{max(got)}" if got else f"{kind} -")
        spilled = sum(bool(r["local"] or r["stack"]) for r in family)
        parts.append(f"{len(family)} {label}, regs {' / '.join(regs)}, {spilled} spill")
    return "; ".join(parts)


def check(version: str, target: Path, cases: list[str]) -> dict:
    """Install ``version`` into ``target`` (once) and check it; the result row (the compile rows are kept in
    ``target``/compile_rows.json)."""
    if not (target / "triton").is_dir():
        pkgs = [f"triton=={version}"] + (["numpy<2"] if tuple(map(int, version.split(".")[:2])) < (3, 7) else [])
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *pkgs]
        subprocess.run(pip, check=True)
    row: dict = {"triton": version}
    got = _run(["-c", "import triton; print(triton.__version__)"], target, False)
    row["imports"] = got.stdout.strip() or got.stderr.strip().splitlines()[-1][:80]
    for module in INTERPRETED:
        row[module.removeprefix("tests.")] = _interpreted(module, target, cases)
    comp = _run(["-m", "bench.triton_compile", "--json"], target, False)
    if comp.stdout.startswith("["):
        rows = json.loads(comp.stdout.splitlines()[0])
        (target / "compile_rows.json").write_text(json.dumps(rows))
        row["compile"] = summarise(rows)
    else:
        row["compile"] = "n/a: " + (comp.stderr.strip().splitlines() or ["?"])[-1][:100]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="a triton release, e.g. 3.2.0")
    parser.add_argument("--target", type=Path, help="install folder (default /tmp/triton-VERSION)")
    parser.add_argument("--cases", nargs="*", default=[], help="interpreter cases (default: all)")
    args = parser.parse_args(argv)
    row = check(args.version, args.target or Path(f"/tmp/triton-{args.version}"), args.cases)
    print(" | ".join(f"{v}" for v in row.values()))


if __name__ == "__main__":
    main()
