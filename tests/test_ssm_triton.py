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
from tests.triton_interpreted import CASES, CUDA_CASES

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
    proc = _run(["-m", "bench.triton_compile", "--json"], interpret=False, timeout=900)
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
    spilled = [r for r in rows if (r["local"] or r["stack"]) and r["models"] != "api-widest"]
    assert not spilled and returncode == 0, spilled
    assert all(r["local"] + r["stack"] <= 16 for r in rows)  # the API's widest call: at most a few words


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (make gpu-check)")
@pytest.mark.parametrize("case", CUDA_CASES, ids=[c.name for c in CUDA_CASES])
def test_compiled_kernels_match_reference_on_cuda(case) -> None:
    """The compiled kernels, on the interpreter's cases and on tiles of the real size (several 2048-step
    tiles, a partial last one, N 16), against the reference on the GPU, at mamba_ssm's CUDA tolerances."""
    from tests.triton_interpreted import run_case

    failed = {k: v for k, v in run_case(case, device="cuda").items() if v["excess"] > 0}
    assert not failed, f"{case.name}: {failed}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (make gpu-check)")
def test_deterministic_grads_are_bitwise_reproducible_on_cuda() -> None:
    from model.ssm.triton_scan import selective_scan_triton
    from tests.triton_interpreted import Case, make_inputs

    inputs = make_inputs(Case("repro", batch=2, d=16, n=16, length=5000, groups=4))
    runs = []
    for _ in range(2):
        leaves = {k: None if v is None else v.cuda().requires_grad_() for k, v in inputs.items()}
        y = selective_scan_triton(**leaves, delta_softplus=True, deterministic=True)
        runs.append(torch.autograd.grad(y.square().sum(), [leaves["B"], leaves["C"]]))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


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


SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0020*/                   FFMA R2, R3, R4, R5 ;
        /*0030*/                   SHFL.UP PT, R6, R2, 0x1, RZ ;
        /*0040*/                   FMUL R2, R2, R6 ;
        /*0050*/               @!P0 BRA 0x20 ;
        /*0060*/                   MEMBAR.ALL.GPU ;
        /*0070*/               @P1 BRA 0x10 ;
        /*0080*/                   EXIT ;
        /*0090*/                   FADD R2, R2, R2 ;
        /*00a0*/                   BRA 0x40 ;
        /*00b0*/                   BRA 0xb0 ;
"""


def test_sass_counts_the_main_loop_with_its_inner_loop_n_times() -> None:
    """A tile loop (0x10-0x70) around a state loop (0x20-0x50); the block after EXIT that branches back is an
    outlined path, not a loop. 8 threads, N 4, 2 steps: (3 + 4 * 4) instructions * 8 / (4 * 2) = 19."""
    from bench.triton_sass import find_loops, main_loop_profile, parse_sass

    instrs = parse_sass(SASS)
    assert [i.op for i in instrs][:3] == ["MOV", "BAR.SYNC.DEFER_BLOCKING", "FFMA"] and instrs[5].pred == "@!P0"
    assert find_loops(instrs) == [(2, 5), (1, 7)]
    p = main_loop_profile(instrs, d_state=4, steps=2, threads=8)
    assert (p["loop_instrs"], p["inner_loops"], p["per_iter"], p["per_elem"]) == (7, 1, 19, 19.0)
    assert (p["bar"], p["membar"], p["shfl"], p["shfl_per_elem"]) == (1, 1, 4, 4.0)
    one_tile = main_loop_profile(instrs[2:6], d_state=4, steps=2, threads=8, tiles=1)  # the state loop alone
    assert one_tile["per_iter"] == 16 and one_tile["per_elem"] == 16.0


def test_gpu_check_without_cuda_says_so_and_exits_0(capsys) -> None:
    from bench import gpu_check

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: make gpu-check runs it")
    assert gpu_check.main([]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out


def test_deterministic_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ssm.deterministic``: triton runs with deterministic=True, mamba_ssm (atomic dB/dC) is refused by name and
    passed over by ``auto``; torch is unchanged."""
    from model.ssm.triton_scan import selective_scan_triton

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    scan = ssm.resolve_backend("triton", cuda, deterministic=True)
    assert (
        scan.name == "triton" and scan.fn.func is selective_scan_triton and scan.fn.keywords == {"deterministic": True}
    )
    assert ssm.resolve_backend("triton", cuda).fn is selective_scan_triton
    monkeypatch.setattr(ssm, "_mamba_ssm_fn", lambda: "mamba")
    assert ssm.resolve_backend("auto", cuda, deterministic=True).name == "triton"
    with pytest.raises(RuntimeError, match="ssm.deterministic: mamba_ssm is not bitwise reproducible"):
        ssm.resolve_backend("mamba_ssm", cuda, deterministic=True)
    assert ssm.resolve_backend("auto", cpu, deterministic=True).name == "torch"


def test_tiles_are_one_warp_of_16_byte_loads() -> None:
    """Backward: a tile is 32 threads x one 16-byte load of steps (4 with z in 16-bit); forward: 32 threads x
    16 steps in 16-byte parts (4 fp32, 2 16-bit), down to 4 a thread when a tile is shorter; both at most
    ``chunk`` and a power of two covering a shorter L; every thread holds S consecutive steps (S x R = the
    tile). The backward's tile is the saved states' spacing, which the forward's tile is a multiple of."""
    from model.ssm.triton_scan import tile, tiling

    f32, bf16 = torch.float32, torch.bfloat16
    assert (tile(16384, 1024, f32), tile(16384, 1024, bf16), tile(16384, 1024, bf16, has_z=True)) == (128, 256, 128)
    assert (tile(16384, 64, bf16), tile(37, 1024, f32), tile(1, 1024, f32)) == (64, 64, 2)
    assert (tile(16384, 1024, f32, forward=True), tile(256, 1024, bf16, forward=True)) == (512, 256)
    t = tiling(256, 16384, bf16, has_z=False)
    assert (t["S"], t["R"], t["num_warps"], t["CONTIG"], t["EVEN"]) == (8, 32, 1, True, True)
    t = tiling(64, 150, f32, has_z=True)
    assert (t["S"], t["R"], t["num_warps"], t["CONTIG"], t["EVEN"]) == (4, 16, 1, False, False)
    for dtype, steps, want in ((f32, 512, (16, 32, 4)), (bf16, 512, (16, 32, 2)), (bf16, 256, (8, 32, 1))):
        t = tiling(steps, 16384, dtype, has_z=True, forward=True)
        assert (t["S"], t["R"], t["P"], t["num_warps"]) == (*want, 1)
    t = tiling(64, 150, f32, has_z=False, forward=True)
    assert (t["S"], t["R"], t["P"], t["EVEN"]) == (4, 16, 1, False)
