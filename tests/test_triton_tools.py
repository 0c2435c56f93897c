"""The Triton tooling around the kernels: the JIT specialisation bench.triton_compile rebuilds, the versions
script's summary and the time model's fused rows. No kernel is compiled here (tests/test_ssm_triton.py does)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.triton_compile import API_CALL, ScanCall, _launch_args, specialise
from bench.triton_versions import summarise

CROSS_CALL = ScanCall(8, 30, 3, 4, True, False, True, True, False, cross="atomic", map_hw=(5, 6))


@pytest.mark.parametrize("call", [API_CALL, CROSS_CALL, dataclasses.replace(CROSS_CALL, cross="ordered")])
def test_specialisation_is_the_jits(call: ScanCall) -> None:
    """The signature, constexprs and attributes of every launch equal what the installed triton's own JIT binder
    derives from the same arguments (the oracle: triton's code, not ours)."""
    triton = pytest.importorskip("triton")
    version = tuple(int(v) for v in triton.__version__.split(".")[:2])
    if version < (3, 4):
        pytest.skip("the binder below is triton 3.4+'s (bench.triton_versions checks older ones)")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    from model.ssm import triton_kernels

    backend = make_backend(GPUTarget("cuda", 90, 32))
    for dtype in (torch.float32, torch.bfloat16):
        for name, (args, meta) in _launch_args(call, dtype).items():
            kernel = getattr(triton_kernels, name)
            binder = create_function_from_signature(kernel.signature, kernel.params, backend)
            bound, spec, _ = binder(*args, **meta)
            ours, options = specialise(kernel, args, meta, backend, version)
            assert ours.signature == {p.name: s[0] for p, s in zip(kernel.params, spec)}, name
            constexprs = {p.name: v for p, s, v in zip(kernel.params, spec, bound.values()) if s[0] == "constexpr"}
            assert ours.constexprs == constexprs, name
            assert ours.attrs == {(i,): backend.parse_attr(s[1]) for i, s in enumerate(spec) if isinstance(s[1], str)}
            assert "num_warps" in options and not set(options) & set(kernel.arg_names)


def test_versions_summary_splits_unfused_and_fused() -> None:
    row = dict(local=0, stack=0, cross="")
    rows = [
        {**row, "kernel": "scan_fwd", "regs": 64},
        {**row, "kernel": "scan_fwd", "regs": 128},
        {**row, "kernel": "scan_bwd", "regs": 72, "stack": 8},
        {**row, "kernel": "scan_fwd", "regs": 202, "cross": "atomic"},
        {**row, "kernel": "scan_bwd", "regs": 80, "cross": "ordered"},
    ]
    assert summarise(rows) == (
        "3 kernels, regs fwd 64-128 / bwd 72-72, 1 spill; 2 fused, regs fwd 202-202 / bwd 80-80, 0 spill"
    )


def test_time_model_prices_a_fused_row_as_one_core_call() -> None:
    """A fused row covers the 4 directions of one SS2D call: elements 4 Di x H W x N; its bytes are
    bench.ss2d_bytes' count of the fused kernels; the ordered merge adds 3 read-and-writes of the fp32 map."""
    from bench.triton_time_model import GPUS, dram_bytes, estimate

    call = "d=8 L=30 N=3 G=4 D+bias+softplus cross 5x6 {}"
    fwd = dict(first_call=call.format("atomic"), dtype="fp32", kernel="scan_fwd", arch="sm_90", cross="atomic")
    batch, m = 2, 2 * 2 * 30  # batch x Di x H W: the map's elements
    x_passes, delta, bc, merge = 4 * m * 4, 4 * m * 4, 2 * (batch * 4 * 3 * 30 * 4), m * 4
    states = batch * 8 * 2 * 3 * 4  # (one tile + the last state) x N per (batch, direction, channel)
    assert dram_bytes(fwd, batch, ours=True) == x_passes + delta + bc + merge + states
    ordered = {**fwd, "first_call": call.format("ordered"), "cross": "ordered"}
    assert dram_bytes(ordered, batch, ours=True) - dram_bytes(fwd, batch, ours=True) == 3 * 2 * m * 4
    _, sms, ghz, _ = GPUS["sm_90"]
    issue = estimate(fwd, batch, 10.0, ours=True)["issue_ms"]
    assert issue == pytest.approx(10.0 * batch * 8 * 30 * 3 / 32 / (4 * sms * ghz * 1e9) * 1e3)
