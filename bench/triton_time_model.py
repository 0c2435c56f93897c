"""Time model of the scan kernels: an ESTIMATE from their SASS counts and the DRAM bytes they move; no GPU runs.

    .venv/bin/python -m bench.triton_time_model [--sass-json ROWS.json] [--batch 32] [--mamba-src SDIST]

For every kernel row of ``bench.triton_sass`` (ours and, where compiled, mamba_ssm's for the same call) at
``--batch``: issue-bound time = thread-instructions (instr/el x batch x d x L x N) / 32 per warp
instruction / (4 warp instructions per clock per SM x SMs x clock), the bound if every scheduler issued
every cycle; bandwidth-bound time = DRAM bytes / peak bandwidth, counting each tensor once (B and C are
read from DRAM once per group and re-read by a group's channels through L2; dB and dC are zeroed and then
accumulated in L2 and written once; ours saves the fp32 state entering each backward tile (the row's
``save`` steps), mamba_ssm an fp32
(decay, state) pair per 2048-step chunk). The estimate is the larger of the two; latency, occupancy and
L2 traffic are not modelled. sm_90 rows are priced on an H100 SXM, sm_80 rows on an A100 SXM 80 GB.

Fused rows (SS2D's core, ``cross`` atomic / ordered): one core call, all 4 directions (the ordered merge's 4
launches together): elements = batch x 4 Di x H W x N, bytes as ``bench.ss2d_bytes.fused_kernel_bytes`` counts
the kernels (the map read once per direction, the fp32 merge written once, ordered: 3 more read-and-writes; the
operator's zero fill and cast around the kernels are not in the row; the column gathers assumed served by L2).
Their mamba_ssm figure is its scan kernel on the same (B, 4 Di, L) sequences alone: the cross-scan and merge
passes a mamba_ssm-based SS2D adds around it are in ``bench.ss2d_bytes``, not here. The second table puts
them together per SS2D core call (forward + backward): the kernels' estimates plus the bytes
``bench.ss2d_bytes`` counts for every other operation of the call (eager, no fusion), at peak bandwidth.
"""

from __future__ import annotations

import json
import os
import re

import torch

from bench.ss2d_bytes import DTYPES, fused_kernel_bytes
from bench.ss2d_bytes import rows as ss2d_rows
from bench.triton_compile import MODEL_CONFIGS
from bench.triton_sass import report
from utils.cli import ArgumentParser, run_cli

GPUS = {  # name, SMs, boost clock (GHz), DRAM bandwidth (TB/s)
    "sm_90": ("H100 SXM", 132, 1.98, 3.35),
    "sm_80": ("A100 SXM 80GB", 108, 1.41, 2.039),
}
_ISSUE_PER_CLOCK = 4  # warp instructions per SM per clock (one per scheduler)


def _shape(row: dict) -> tuple[int, int, int, int]:
    """(d, L, N, G) of the row's call, read off its description (``d=192 L=16384 N=8 G=4 ...``)."""
    f = dict(re.findall(r"(\w)=(\d+|-)", row["first_call"]))
    return int(f["d"]), int(f["L"]), int(f["N"]), 1 if f["G"] == "-" else int(f["G"])


def fused_bytes(row: dict, batch: int) -> int:
    """DRAM bytes of a fused row's kernels over one SS2D core call, counted by ``bench.ss2d_bytes``."""
    d, length, n, _ = _shape(row)
    height, width = map(int, re.search(r"cross (\d+)x(\d+)", row["first_call"]).groups())
    dtype = DTYPES[row["dtype"]]
    x = torch.empty(batch, d // 4, height, width, dtype=dtype, device="meta")
    B = torch.empty(batch, 4, n, length, dtype=dtype, device="meta")
    return fused_kernel_bytes(x, B, n, backward=row["kernel"].endswith("bwd"), ordered=row["cross"] == "ordered")


def dram_bytes(row: dict, batch: int, ours: bool) -> float:
    """DRAM bytes one launch (a fused row: one core call) of ``row``'s kernel moves at ``batch`` (module
    docstring)."""
    if ours and row.get("cross"):
        return fused_bytes(row, batch)
    d, length, n, groups = _shape(row)
    s = 2 if row["dtype"] == "bf16" else 4
    per_ch = batch * d * length * s  # one (batch, d, L) tensor in the input dtype
    bc = batch * groups * n * length * s  # B or C
    z = per_ch if row["has_z"] else 0
    if ours:
        saved = batch * d * -(-length // row.get("save", row["chunk"])) * n * 4
    else:
        saved = batch * d * -(-length // 2048) * n * 8
    if row["kernel"].endswith("fwd"):
        return 2 * per_ch + z + 2 * bc + per_ch + saved  # u, delta, z, B, C in; y, states out
    dbc = 2 * batch * groups * n * length * 4  # dB, dC fp32
    return 3 * per_ch + 2 * z + 2 * bc + saved + 2 * per_ch + 2 * dbc  # u, delta, dy, z in; du, ddelta, dz out


def estimate(row: dict, batch: int, per_elem: float, ours: bool) -> dict:
    """Issue-bound, bandwidth-bound and estimated time (ms) of one launch."""
    _, sms, ghz, tbs = GPUS[row["arch"]]
    d, length, n, _ = _shape(row)
    elements = batch * d * length * n
    issue = per_elem * elements / 32 / (_ISSUE_PER_CLOCK * sms * ghz * 1e9) * 1e3
    bandwidth = dram_bytes(row, batch, ours) / (tbs * 1e12) * 1e3
    return {"issue_ms": issue, "bw_ms": bandwidth, "est_ms": max(issue, bandwidth)}


def table(rows: list[dict], batch: int) -> str:
    head = ("models", "call", "dtype", "kernel", "gpu", "ours issue", "ours bw", "ours est", "mamba issue")
    head += ("mamba bw", "mamba est", "ours/mamba")
    lines = [head]
    for r in rows:
        o = estimate(r, batch, r["per_elem"], True)
        cells = [r["models"], r["first_call"], r["dtype"], r["kernel"], GPUS[r["arch"]][0]]
        cells += [f"{o[k]:.3f}" for k in ("issue_ms", "bw_ms", "est_ms")]
        if "theirs_per_elem" in r:
            m = estimate(r, batch, r["theirs_per_elem"], False)
            cells += [f"{m[k]:.3f}" for k in ("issue_ms", "bw_ms", "est_ms")] + [f"{o['est_ms'] / m['est_ms']:.2f}"]
        lines.append(tuple(cells))
    widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def core_table(rows: list[dict], batch: int, configs: list[str]) -> str:
    """Per SS2D core call of ``configs``' networks (``bench.ss2d_bytes``): the composed path (the unfused scan
    kernel, ours or mamba_ssm's, and the eager cross-scan / merge / projection operations around it) against
    the fused one (the atomic kernels and their operations), forward + backward ms: the kernels' estimates
    above plus the operations' counted bytes at peak bandwidth."""
    head = ("models", "SS2D call", "dtype", "gpu", "ours composed", "mamba_ssm composed", "ours fused", "fused/mamba")
    lines = [head]
    for core in ss2d_rows(configs, batch, list(DTYPES)):
        di, height, width, n = map(int, re.match(r"Di=(\d+) (\d+)x(\d+) N=(\d+)", core["call"]).groups())
        for arch, (gpu, *_, tbs) in GPUS.items():
            found = {}  # the kernels compiled for this call (d is not specialised: a row serves every d)
            for r in rows:
                _, length, n_r, groups = _shape(r)
                call = (length, n_r, groups, r["has_z"], r["dtype"], r["arch"])
                if call == (height * width, n, 4, False, core["dtype"], arch):  # SS2D: 4 groups, no z
                    at_d = re.sub(r"\bd=\d+", f"d={4 * di}", r["first_call"])
                    found[(r["cross"] or "plain", r["kernel"][-3:])] = dict(r, first_call=at_d)
            plain = [found.get(("plain", k)) for k in ("fwd", "bwd")]
            fused = [found.get(("atomic", k)) for k in ("fwd", "bwd")]
            if None in plain + fused:
                continue
            kernels = core["detail"]
            ops = {
                p: sum(core[f"{p} {w}"] for w in ("forward", "backward")) - sum(kernels[p]["kernels"].get(f"{name} {k}", 0)
                for k in ("fwd", "bwd")) for p, name in (("composed", "scan kernel"), ("fused", "fused kernel"))
            }  # fmt: skip
            ops_ms = {p: v / (tbs * 1e12) * 1e3 for p, v in ops.items()}
            ours = sum(estimate(r, batch, r["per_elem"], True)["est_ms"] for r in plain) + ops_ms["composed"]
            own = sum(estimate(r, batch, r["per_elem"], True)["est_ms"] for r in fused) + ops_ms["fused"]
            cells = [core["models"], core["call"], core["dtype"], gpu, f"{ours:.2f}"]
            if all("theirs_per_elem" in r for r in plain):
                theirs = sum(estimate(r, batch, r["theirs_per_elem"], False)["est_ms"] for r in plain)
                theirs += ops_ms["composed"]
                cells += [f"{theirs:.2f}", f"{own:.2f}", f"{own / theirs:.2f}"]
            else:
                cells += ["-", f"{own:.2f}", "-"]
            lines.append(tuple(cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sass-json", help="rows printed by `python -m bench.triton_sass --json` (else compiled now)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--mamba-src", default=os.environ.get("MAMBA_SSM_SRC"), help="as bench.triton_sass")
    args = parser.parse_args(argv)
    if args.sass_json:
        with open(args.sass_json) as f:
            rows = json.loads(f.readline())
    else:
        rows, skipped = report((90, 80), args.mamba_src)
        if skipped:
            print(skipped)
    print(
        f"ESTIMATE, not a measurement (no GPU ran): milliseconds per launch (fused rows: per SS2D core call) at batch {args.batch}"
    )
    print(table(rows, args.batch))
    print(
        "\nper SS2D core call, forward + backward, ms (ESTIMATE: kernels as above, other operations at peak bandwidth)"
    )
    print(core_table(rows, args.batch, list(MODEL_CONFIGS[:2])))


if __name__ == "__main__":
    run_cli(main)
