"""The ``triton`` scan backend without a GPU: kernels under Triton's interpreter against the reference,
every kernel configuration the models launch compiled ahead of time for sm_80 and sm_90, and dispatch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import model.ssm as ssm
from bench.triton_compile import DTYPES
from tests.triton_interpreted import CASES

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], interpret: bool, timeout: int) -> subprocess.CompletedProcess:
    """A fresh interpreter: triton reads TRITON_INTERPRET once, at its import."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(paths))  # keep a private triton on the path
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def interpreted() -> dict:
    proc = _run(["-m", "tests.triton_interpreted"], interpret=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_interpreted_kernels_match_reference(interpreted: dict, case) -> None:
    """y, last_state and the gradient of every input (the loss weighs y and last_state) within tolerance."""
    result = interpreted[case.name]
    expected = {"y", "du", "ddelta", "dA", "dB", "dC"}
    expected |= {name for name, on in (("last_state", case.last_state), ("dD", case.D), ("dz", case.z)) if on}
    expected |= {"ddelta_bias"} if case.bias else set()
    assert set(result) == expected
    failed = {k: v for k, v in result.items() if v["excess"] > 0}
    assert not failed, f"{case.name}: {failed}"


@pytest.fixture(scope="module")
def compiled() -> tuple[int, list[dict]]:
    proc = _run(["-m", "bench.triton_compile", "--json"], interpret=False, timeout=600)
    assert proc.stdout, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout.splitlines()[0])


def test_every_model_kernel_compiles_for_sm80_and_sm90_without_spills(compiled) -> None:
    """The launches are read off HybriMamba, RHMC and the Mamba-1D ablation at 128x128."""
    returncode, rows = compiled
    models = {m for r in rows for m in r["models"].split(",")}
    assert models == {"hybrimamba_x8_celeba", "rhmc_x8_celeba", "mamba1d", "api-widest"}
    for model_name in models:
        mine = [r for r in rows if model_name in r["models"].split(",")]
        kinds = {(r["dtype"], r["kernel"], r["arch"]) for r in mine}
        assert kinds == {(d, k, a) for d in DTYPES for k in ("scan_fwd", "scan_bwd") for a in ("sm_80", "sm_90")}
    assert any("L=16384" in r["first_call"] for r in rows)
    assert all(r["cubin_bytes"] > 0 and 0 < r["regs"] <= 255 for r in rows)
    spilled = [r for r in rows if r["local"] or r["stack"]]
    assert not spilled and returncode == 0, spilled


def test_cpu_tensors_need_the_interpreter() -> None:
    from model.ssm.triton_scan import interpreting, selective_scan_triton

    if interpreting():
        pytest.skip("this process runs triton interpreted")
    x = torch.zeros(1, 2, 3)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        selective_scan_triton(x, x, torch.zeros(2, 2), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))


def test_bad_dtype_and_chunk_are_named() -> None:
    from model.ssm.triton_scan import selective_scan_triton

    x = torch.zeros(1, 2, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="u must be float32, float16 or bfloat16, got torch.float64"):
        selective_scan_triton(x, x, torch.zeros(2, 2), x, x)
    y = x.float()
    with pytest.raises(ValueError, match="chunk must be a power of two"):
        selective_scan_triton(y, y, torch.zeros(2, 2), y, y, chunk=48)


def test_triton_backend_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``triton`` on CUDA gives the kernels, on CPU a clear error; ``auto`` on CUDA falls back
    mamba_ssm -> triton -> torch (resolution looks at the device type only: no GPU needed)."""
    from model.ssm.triton_scan import selective_scan_triton

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert ssm.resolve_backend("triton", cuda) == ("triton", selective_scan_triton)
    with pytest.raises(RuntimeError, match="ssm.backend=triton needs CUDA tensors, got cpu"):
        ssm.resolve_backend("triton", cpu)
    monkeypatch.setattr(ssm, "_mamba_ssm_fn", lambda: None)
    assert ssm.resolve_backend("auto", cuda)[0] == "triton"
    assert ssm.resolve_backend("auto", cpu)[0] == "torch"
    monkeypatch.setattr(ssm, "_mamba_ssm_fn", lambda: "mamba")
    assert ssm.resolve_backend("auto", cuda) == ("mamba_ssm", "mamba")
    monkeypatch.setattr(ssm, "_mamba_ssm_fn", lambda: None)
    monkeypatch.setattr(ssm, "_triton_fn", lambda: None)
    assert ssm.resolve_backend("auto", cuda)[0] == "torch"
    with pytest.raises(RuntimeError, match="triton does not import"):
        ssm.resolve_backend("triton", cuda)
