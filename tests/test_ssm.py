"""Selective scan backends against the reference loop: outputs, every gradient, dispatch, FLOPs."""

from __future__ import annotations

import pytest
import torch

import model.ssm as ssm
import model.ssm.chunked_scan as chunked_scan
from model.ssm import count_scan_flops, resolve_backend, scan_flops, selective_scan
from model.ssm.chunked_scan import CHUNK, selective_scan_chunked
from model.ssm.cpu_kernel import kernel_available, selective_scan_compiled
from model.ssm.reference import selective_scan_reference

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _compiled(*args, **kwargs):
    if not kernel_available():
        pytest.skip("no C++ compiler / the CPU kernel did not build")
    return selective_scan_compiled(*args, **kwargs)


def _segmented(*args, **kwargs):
    """The pure-PyTorch scan with chunks of 8 and one chunk per segment: many segment hand-overs."""
    saved = chunked_scan.SEGMENT_ELEMENTS
    chunked_scan.SEGMENT_ELEMENTS = 1
    try:
        return selective_scan_chunked(*args, **kwargs, chunk=8)
    finally:
        chunked_scan.SEGMENT_ELEMENTS = saved


IMPLS = {"chunked": selective_scan_chunked, "segmented": _segmented, "compiled": _compiled}


def make_inputs(
    batch: int = 2,
    d: int = 8,
    n: int = 4,
    length: int = 37,
    groups: int | None = None,
    with_d: bool = True,
    with_z: bool = True,
    with_bias: bool = True,
    delta_range: tuple[float, float] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    bc_shape = (batch, groups, n, length) if groups else (batch, n, length)
    if delta_range is None:
        delta = 0.5 * torch.randn(batch, d, length, generator=g)
    else:
        lo, hi = delta_range
        delta = lo + (hi - lo) * torch.rand(batch, d, length, generator=g)
    inputs = {
        "u": torch.randn(batch, d, length, generator=g),
        "delta": delta,
        "A": -(0.1 + 2 * torch.rand(d, n, generator=g)),
        "B": torch.randn(bc_shape, generator=g),
        "C": torch.randn(bc_shape, generator=g),
        "D": torch.randn(d, generator=g) if with_d else None,
        "z": torch.randn(batch, d, length, generator=g) if with_z else None,
        "delta_bias": 0.3 * torch.randn(d, generator=g) if with_bias else None,
    }
    return {k: (v.requires_grad_() if v is not None else None) for k, v in inputs.items()}


def run_with_grads(fn, inputs, delta_softplus: bool, with_last: bool = True):
    """Output, last state and the gradient of every input for a fixed random cotangent."""
    for v in inputs.values():
        if v is not None:
            v.grad = None
    y, last = fn(**inputs, delta_softplus=delta_softplus, return_last_state=True)
    g = torch.Generator().manual_seed(123)
    loss = (y * torch.randn(y.shape, generator=g).to(y.device)).sum()
    if with_last:
        loss = loss + (last * torch.randn(last.shape, generator=g).to(last.device)).sum()
    loss.backward()
    grads = {k: v.grad.clone() for k, v in inputs.items() if v is not None}
    return y.detach(), last.detach(), grads


def assert_matches(got, want, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    y, last, grads = got
    y_ref, last_ref, grads_ref = want
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(last, last_ref, rtol=rtol, atol=atol)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        scale = {"u": (2, 2), "delta": (5, 10), "delta_bias": (5, 10)}.get(name, (1, 1))
        # dA, dD, ddelta_bias sum over batch and time: allow for the summation order.
        summed = 4 if name in ("A", "D", "delta_bias") else 1
        torch.testing.assert_close(
            grads[name],
            grads_ref[name],
            rtol=rtol * scale[0] * summed,
            atol=atol * scale[1] * summed,
            msg=lambda m, name=name: f"d{name}: {m}",
        )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "case",
    [
        dict(length=37),  # not a multiple of the chunk
        dict(length=2 * CHUNK + 5, groups=4),
        dict(length=CHUNK, groups=2, with_d=False, with_z=False, with_bias=False),
        dict(length=1, n=5),
        dict(length=70, with_z=False, with_bias=False, batch=1, n=3),
    ],
    ids=["odd-length", "grouped-G4", "plain", "one-step", "no-z-N3"],
)
@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "raw-delta"])
def test_torch_impls_match_reference(impl: str, case: dict, softplus: bool) -> None:
    inputs = make_inputs(**case)
    if not softplus:  # keep delta positive as a softplus output would be
        with torch.no_grad():
            inputs["delta"].abs_()
            if inputs["delta_bias"] is not None:
                inputs["delta_bias"].abs_()
    want = run_with_grads(selective_scan_reference, inputs, softplus)
    got = run_with_grads(IMPLS[impl], inputs, softplus)
    assert_matches(got, want)


@pytest.mark.parametrize("impl", IMPLS)
def test_large_delta_is_finite_and_matches(impl: str) -> None:
    """delta in 1..6 with N=16 and |A| up to 2.1: |A| sum(delta) over a chunk is far past 88."""
    inputs = make_inputs(d=4, n=16, length=150, groups=2, delta_range=(1.0, 6.0))
    want = run_with_grads(selective_scan_reference, inputs, delta_softplus=False)
    got = run_with_grads(IMPLS[impl], inputs, delta_softplus=False)
    for t in (got[0], got[1], *got[2].values()):
        assert torch.isfinite(t).all()
    assert_matches(got, want)


@pytest.mark.parametrize("impl", IMPLS)
def test_softplus_threshold_region(impl: str) -> None:
    """delta + bias above 20 uses softplus(x) = x and gradient 1, as torch's softplus."""
    inputs = make_inputs(d=4, length=40, with_z=False)
    with torch.no_grad():
        inputs["delta"][:, :2] += 25.0
        inputs["A"].mul_(0.01)
    want = run_with_grads(selective_scan_reference, inputs, True)
    got = run_with_grads(IMPLS[impl], inputs, True)
    assert_matches(got, want, rtol=2e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_output_only_and_state_only_gradients(impl: str) -> None:
    inputs = make_inputs(d=4, length=50, groups=2)
    want = run_with_grads(selective_scan_reference, inputs, True, with_last=False)
    got = run_with_grads(IMPLS[impl], inputs, True, with_last=False)
    assert_matches(got, want)

    def last_only(fn):
        for v in inputs.values():
            if v is not None:
                v.grad = None
        _, last = fn(**inputs, delta_softplus=True, return_last_state=True)
        last.square().sum().backward()
        return {k: torch.zeros_like(v) if v.grad is None else v.grad for k, v in inputs.items() if v is not None}

    ref_grads, grads = last_only(selective_scan_reference), last_only(IMPLS[impl])
    for name in ("u", "delta", "A", "B", "delta_bias"):
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=5e-5, atol=5e-5)
    assert grads["C"].abs().max() == 0 and grads["z"].abs().max() == 0 and grads["D"].abs().max() == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_autocast(impl: str) -> None:
    """bf16 inputs under autocast: fp32 arithmetic inside, output and gradients in the input dtypes."""
    fp32 = make_inputs(d=8, length=45, groups=4)
    bf16 = {
        k: (v.detach().to(torch.bfloat16) if k in ("u", "delta", "B", "C", "z") else v.detach()).requires_grad_()
        for k, v in fp32.items()
    }
    want = run_with_grads(
        selective_scan_reference, {k: v.detach().float().requires_grad_() for k, v in bf16.items()}, True
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, last = IMPLS[impl](**bf16, delta_softplus=True, return_last_state=True)
        assert y.dtype == torch.bfloat16 and last.dtype == torch.float32
        g = torch.Generator().manual_seed(123)
        loss = (y.float() * torch.randn(y.shape, generator=g)).sum() + (
            last * torch.randn(last.shape, generator=g)
        ).sum()
    loss.backward()
    torch.testing.assert_close(y.float(), want[0], rtol=3e-2, atol=5e-2)
    torch.testing.assert_close(last, want[1], rtol=1e-5, atol=1e-5)
    for name, v in bf16.items():
        assert v.grad.dtype == v.dtype, name
        # The cotangent reaching the scan was rounded to bf16, so compare at bf16 tolerances.
        torch.testing.assert_close(v.grad.float(), want[2][name], rtol=3e-2, atol=5e-2 * 10)


@pytest.mark.parametrize("impl", [*IMPLS, "torch-backend"])
@pytest.mark.parametrize("groups", [None, 2])
def test_batch_zero_gives_empty_outputs_and_zero_gradients(impl: str, groups: int | None) -> None:
    """An empty batch (the last shard of a tiny dataset) must not crash the backward: same as the reference."""
    fn = (lambda **kw: selective_scan(**kw, backend="torch")) if impl == "torch-backend" else IMPLS[impl]
    inputs = make_inputs(batch=0, groups=groups, length=CHUNK + 3)
    y, last, grads = run_with_grads(fn, inputs, delta_softplus=True)
    y_ref, last_ref, grads_ref = run_with_grads(selective_scan_reference, inputs, delta_softplus=True)
    assert y.shape == y_ref.shape == (0, 8, CHUNK + 3) and last.shape == last_ref.shape == (0, 8, 4)
    for name, grad in grads.items():
        assert grad.shape == grads_ref[name].shape == inputs[name].shape, name
        assert grad.dtype == inputs[name].dtype and not grad.abs().any(), name


def test_compiled_inference_and_no_grad() -> None:
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(length=300, groups=2).items()}
    want = selective_scan_reference(**inputs, delta_softplus=True)
    with torch.no_grad():
        got = _compiled(**inputs, delta_softplus=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not got.requires_grad


def test_compiled_spans_several_blocks() -> None:
    """Longer than the kernel's blocks of 1024 steps (kBlock; B, C held per block), ending in a partial block."""
    inputs = make_inputs(batch=1, d=4, n=8, length=2 * 1024 + 37, groups=2)
    want = run_with_grads(selective_scan_reference, inputs, True)
    got = run_with_grads(_compiled, inputs, True)
    assert_matches(got, want)


@pytest.mark.parametrize("optional", [True, False], ids=["D-z-bias", "none"])
def test_compiled_operators_pass_opcheck(optional: bool) -> None:
    """torch.library.opcheck on both C++ operators: schema, fake kernels (exact shapes, dtypes), autograd
    registration, AOT dispatch with dynamic shapes."""
    if not kernel_available():
        pytest.skip("no C++ compiler / the CPU kernel did not build")
    ops = torch.ops.fsr_selective_scan
    t = make_inputs(d=4, length=70, groups=2, with_d=optional, with_z=optional, with_bias=optional)
    args = [t[k] for k in NAMES]
    torch.library.opcheck(ops.fwd.default, (*args, True))
    plain = [v.detach() if v is not None else None for v in args]
    y, last, ckpt = ops.fwd(*plain, True)
    for dout, dlast in ((torch.randn_like(y), torch.randn_like(last)), (None, torch.randn_like(last))):
        torch.library.opcheck(ops.bwd.default, (*plain, True, dout, dlast, ckpt))


def test_torch_backend_uses_compiled_kernel_when_built(caplog: pytest.LogCaptureFixture) -> None:
    import model.ssm.torch_scan as torch_scan

    inputs = make_inputs(length=20)
    torch_scan._logged.clear()
    with caplog.at_level("INFO", logger="model.ssm.torch_scan"):
        selective_scan(**inputs, backend="torch")
    expected = "torch (compiled CPU kernel)" if kernel_available() else "torch (pure PyTorch)"
    assert any(expected in r.getMessage() for r in caplog.records)


def test_falls_back_to_pure_pytorch_when_the_kernel_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import model.ssm.torch_scan as torch_scan

    monkeypatch.setattr(torch_scan, "kernel_available", lambda: False)
    called = []
    real = torch_scan.selective_scan_chunked

    def spy(*args):
        called.append(True)
        return real(*args)

    monkeypatch.setattr(torch_scan, "selective_scan_chunked", spy)
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(length=20).items()}
    got = selective_scan(**inputs, backend="torch")
    assert called
    torch.testing.assert_close(got, selective_scan_reference(**inputs), rtol=1e-5, atol=1e-5)


def test_build_failure_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path
) -> None:
    import model.ssm.cpu_kernel as cpu_kernel

    def broken_load(**kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr("torch.utils.cpp_extension.load", broken_load)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # no cached build there: the build runs (and fails)
    monkeypatch.delenv("FSR_SSM_NO_COMPILE", raising=False)
    with caplog.at_level("WARNING", logger="model.ssm.cpu_kernel"):
        assert cpu_kernel._build() is None
    assert "no compiler here" in caplog.text
    monkeypatch.setenv("FSR_SSM_NO_COMPILE", "1")
    assert cpu_kernel._build() is None


def test_auto_on_cpu_resolves_to_torch() -> None:
    name, fn = resolve_backend("auto", torch.device("cpu"))
    assert name == "torch"
    assert resolve_backend("reference", torch.device("cpu"))[0] == "reference"


@pytest.mark.parametrize("name", ["mamba_ssm", "triton"])
def test_cuda_only_backends_on_cpu_raise(name: str) -> None:
    with pytest.raises(RuntimeError, match=f"ssm.backend={name}.*CUDA"):
        resolve_backend(name, torch.device("cpu"))


def test_unknown_backend_lists_choices() -> None:
    with pytest.raises(ValueError, match="auto, mamba_ssm, triton, torch, reference.*'cuda_fast'"):
        selective_scan(**make_inputs(length=4), backend="cuda_fast")
    with pytest.raises(ValueError, match="'nope'"):
        resolve_backend("nope", "cpu")


def test_bound_scan_is_used_and_unbound_resolves_auto_once(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(length=10).items()}
    calls = []

    def spy(*args):
        calls.append(True)
        return selective_scan_reference(*args)

    got = selective_scan(**inputs, backend=ssm.Scan("spy", spy))
    assert calls and torch.equal(got, selective_scan_reference(**inputs))
    monkeypatch.setattr(ssm, "_unbound", {})
    resolved = []
    real = ssm.resolve_backend
    monkeypatch.setattr(ssm, "resolve_backend", lambda *a: resolved.append(a) or real(*a))
    for _ in range(3):
        selective_scan(**inputs)
    assert resolved == [("auto", torch.device("cpu"))]


def test_backend_table_gives_names_auto_order_and_config_choices() -> None:
    from utils.config import SCHEMA

    assert ssm.BACKENDS == ("auto", *(row.name for row in ssm.BACKEND_TABLE))
    assert [row.name for row in ssm.BACKEND_TABLE if row.in_auto] == ["mamba_ssm", "triton", "torch"]
    assert SCHEMA["ssm"]["backend"].allowed() == ssm.BACKENDS


def test_bad_shapes_raise_clear_errors() -> None:
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(d=8, length=10).items()}
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(**{**inputs, "A": inputs["A"][:3]})
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(**{**inputs, "B": inputs["B"][..., :5]})
    with pytest.raises(ValueError, match="at least 1"):
        selective_scan(**{k: v[..., :0] if v is not None and v.dim() == 3 else v for k, v in inputs.items()})
    with pytest.raises(ValueError, match="groups"):
        selective_scan(**{**inputs, "B": torch.randn(2, 3, 4, 10), "C": torch.randn(2, 3, 4, 10)})


def test_count_scan_flops() -> None:
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(batch=2, d=8, n=4, length=10).items()}
    assert scan_flops(2, 8, 10, 4, has_d=True, has_z=True) == 9 * 2 * 8 * 10 * 4 + 2 * 160 + 5 * 160
    assert scan_flops(1, 1, 1, 1, has_d=False, has_z=False) == 9
    with count_scan_flops() as outer:
        selective_scan(**inputs)
        with count_scan_flops() as inner:
            selective_scan(**{**inputs, "D": None, "z": None})
    assert inner[0] == 9 * 2 * 8 * 10 * 4
    assert outer[0] == scan_flops(2, 8, 10, 4, True, True) + inner[0]
    selective_scan(**inputs)
    assert outer[0] == scan_flops(2, 8, 10, 4, True, True) + inner[0]  # no counting outside


def _mamba_ssm_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs CUDA"
    if ssm._mamba_ssm_fn() is None:
        return "mamba_ssm does not import (see requirements-cuda.txt)"
    return None


@pytest.mark.skipif(_mamba_ssm_skip_reason() is not None, reason=str(_mamba_ssm_skip_reason()))
@pytest.mark.parametrize("groups", [None, 4])
def test_mamba_ssm_matches_reference(groups: int | None) -> None:
    """Values of y and last_state; gradients of a loss on y only: mamba_ssm's backward ignores d(last_state)."""
    inputs = make_inputs(d=16, n=16, length=200, groups=groups)
    cuda_inputs = {k: (v.detach().cuda().requires_grad_() if v is not None else None) for k, v in inputs.items()}
    want = run_with_grads(selective_scan_reference, inputs, True, with_last=False)
    fn = lambda **kw: selective_scan(**kw, backend="mamba_ssm")  # noqa: E731
    y, last, grads = run_with_grads(fn, cuda_inputs, True, with_last=False)
    assert_matches((y.cpu(), last.cpu(), {k: v.cpu() for k, v in grads.items()}), want, rtol=6e-4, atol=2e-3)


def test_segment_length_keeps_gpu_scans_from_degenerating_to_one_chunk() -> None:
    per_step = 32 * 192 * 8  # batch 32, K*Di 192, N 8: HybriMamba's top level at the paper's batch size
    assert chunked_scan._segment_length(per_step, 16384, 64, torch.device("cpu")) == 64  # cache-sized on CPU
    gpu = chunked_scan._segment_length(per_step, 16384, 64, torch.device("cuda"))
    assert gpu == (1 << 26) // per_step // 64 * 64 == 1344  # 13 segments of 21 chunks instead of 256 of 1
    assert chunked_scan._segment_length(8, 1000, 64, torch.device("cuda")) == 1000  # never past the length
