"""Check one Triton version against this project's kernels, from a private folder (not CI: ~200 MB a version).

    .venv/bin/python -m bench.triton_versions 3.2.0 [--target /tmp/triton-3.2.0] [--cases NAME ...]

Installs ``triton==VERSION`` (and, below 3.7, ``numpy<2``: the interpreters of triton 3.0-3.6 need it)
with ``pip install --target`` into its own folder, then, with that folder first on PYTHONPATH: imports it,
runs the interpreter cases (``tests.triton_interpreted``) and compiles every model kernel for sm_80 and
sm_90 with ``bench.triton_compile`` (which rebuilds each version's JIT specialisation: 3.0-3.1 and 3.2 an
AttrsDescriptor of two kinds, 3.3+ attributes by argument path). Prints one table row: version, cases passed,
kernels compiled, max registers, kernels with spills.
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


def check(version: str, target: Path, cases: list[str]) -> dict:
    """Install ``version`` into ``target`` (once) and check it; the result row."""
    if not (target / "triton").is_dir():
        pkgs = [f"triton=={version}"] + (["numpy<2"] if tuple(map(int, version.split(".")[:2])) < (3, 7) else [])
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *pkgs]
        subprocess.run(pip, check=True)
    row: dict = {"triton": version}
    got = _run(["-c", "import triton; print(triton.__version__)"], target, False)
    row["imports"] = got.stdout.strip() or got.stderr.strip().splitlines()[-1][:80]
    interp = _run(["-m", "tests.triton_interpreted", *cases], target, True)
    if interp.returncode == 0:
        res = json.loads(interp.stdout.splitlines()[-1])
        ok = sum(all(v["excess"] <= 0 for v in r.values()) for r in res.values())
        row["interpreter"] = f"{ok}/{len(res)} cases pass"
    else:
        row["interpreter"] = "fails: " + (interp.stderr.strip().splitlines() or ["?"])[-1][:100]
    comp = _run(["-m", "bench.triton_compile", "--json"], target, False)
    if comp.stdout.startswith("["):
        rows = json.loads(comp.stdout.splitlines()[0])
        spilled = [r for r in rows if r["local"] or r["stack"]]
        row["compile"] = f"{len(rows)} kernels, max {max(r['regs'] for r in rows)} regs, {len(spilled)} spill"
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
