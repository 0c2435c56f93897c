"""mamba_ssm and causal_conv1d adapters against their CUDA kernels' contracts, on CPU stand-ins of the kernels."""

from __future__ import annotations

import pytest
import torch

import model.ssm as ssm
from model.build import bind_scan
from model.mamba1d import causal_conv1d_kernel_args, causal_conv1d_torch
from model.registry import build_model
from model.ssm.mamba_adapter import mamba_ssm_backend
from model.ssm.reference import selective_scan_reference
from tests.helpers import cuda_standin
from tests.helpers.cuda_standin import KernelAssert, real_causal_conv1d_fn
from tests.test_ssm import make_inputs

LOW = (torch.float16, torch.bfloat16)
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (3e-2, 5e-2), torch.float16: (3e-3, 5e-3)}


@pytest.fixture
def scan(monkeypatch: pytest.MonkeyPatch):
    """The production mamba_ssm backend (adapter and its operators) over the stand-in of selective_scan_cuda."""
    cuda_standin.calls.clear()
    return mamba_ssm_backend(cuda_standin.selective_scan_cuda)


@pytest.fixture
def conv(monkeypatch: pytest.MonkeyPatch):
    fn, path = real_causal_conv1d_fn(monkeypatch)
    print(f"causal_conv1d_cuda stand-in under: {path}")
    cuda_standin.calls.clear()
    return lambda x, w, b: fn(*causal_conv1d_kernel_args(x, w, b), activation="silu")


def _cast(inputs: dict, dtype: torch.dtype) -> dict:
    """u, delta, B, C, z in ``dtype`` (the kernel's input type); A, D, delta_bias stay float32."""
    return {
        k: (
            v.detach().to(dtype if k in ("u", "delta", "B", "C", "z") else v.dtype).requires_grad_()
            if v is not None
            else None
        )
        for k, v in inputs.items()
    }


def _y_and_grads(fn, inputs: dict):
    """y, last_state and the gradients of a loss on y only (mamba_ssm's backward ignores d(last_state))."""
    for v in inputs.values():
        if v is not None:
            v.grad = None
    y, last = fn(**inputs, delta_softplus=True, return_last_state=True)
    g = torch.Generator().manual_seed(5)
    (y.float() * torch.randn(y.shape, generator=g)).sum().backward()
    return y.detach(), last.detach(), {k: v.grad for k, v in inputs.items() if v is not None}


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-12))


CASES = {
    "G4-z-D-bias": dict(length=37, groups=4),
    "ungrouped-no-z": dict(length=50, with_z=False),
    "G1-plain": dict(length=20, with_d=False, with_bias=False, groups=1),
    "two-kernel-chunks": dict(batch=1, d=4, n=2, length=2100, groups=2),  # two of the kernel's 2048-step chunks
}


@pytest.mark.parametrize(
    "name, dtype",
    [(name, torch.float32) for name in CASES]
    + [(name, torch.bfloat16) for name in CASES if name != "two-kernel-chunks"],
    ids=lambda v: str(v).removeprefix("torch."),
)
def test_adapter_over_standin_matches_reference(scan, name: str, dtype: torch.dtype) -> None:
    case = CASES[name]
    inputs = _cast(make_inputs(**case), dtype)
    want = _y_and_grads(selective_scan_reference, inputs)
    got = _y_and_grads(scan, inputs)
    assert cuda_standin.calls == {"selective_scan_fwd": 1, "selective_scan_bwd": 1}  # the kernel path ran
    rtol, atol = TOL[dtype]
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    for name, grad in got[2].items():
        assert grad.dtype == inputs[name].dtype, name
        torch.testing.assert_close(
            grad, want[2][name], rtol=rtol * 4, atol=atol * 10, msg=lambda m, n=name: f"d{n}: {m}"
        )
    errors = {"y": _rel(got[0], want[0]), **{f"d{k}": _rel(v, want[2][k]) for k, v in got[2].items()}}
    print(f"{dtype} {case}: max relative error " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))


def test_adapter_casts_what_the_model_can_safely_cast(scan) -> None:
    """bf16 D / delta_bias / A become float32, a strided delta_bias and a transposed u are copied."""
    inputs = make_inputs(length=30, groups=2)
    want = _y_and_grads(selective_scan_reference, inputs)
    odd = {k: v.detach().clone() for k, v in inputs.items()}
    odd["D"], odd["A"] = odd["D"].to(torch.bfloat16), odd["A"].to(torch.bfloat16)
    odd["delta_bias"] = torch.stack([odd["delta_bias"], odd["delta_bias"]], 1)[:, 0]  # stride 2
    odd["u"] = odd["u"].transpose(1, 2).contiguous().transpose(1, 2)  # stride(-1) != 1
    odd = {k: v.requires_grad_() for k, v in odd.items()}
    ref_odd = _y_and_grads(selective_scan_reference, odd)
    got = _y_and_grads(scan, odd)
    assert cuda_standin.calls["selective_scan_fwd"] == 1
    torch.testing.assert_close(got[0], ref_odd[0], rtol=1e-5, atol=1e-5)
    for name in ("u", "delta", "B", "C", "z"):
        torch.testing.assert_close(got[2][name], want[2][name], rtol=1e-2, atol=1e-2)  # bf16 A, D: close
    assert got[2]["D"].dtype == got[2]["A"].dtype == torch.bfloat16


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: {**i, "u": i["u"].double(), "delta": i["delta"].double()}, "u is float64 .* float32, float16 or"),
        (
            lambda i: {**i, "u": i["u"].bfloat16(), "delta": i["delta"].bfloat16()},
            "B is float32 .* one dtype, here u's bfloat16",
        ),
        (lambda i: {**i, "z": i["z"].half()}, r"z is float16 \(2, 8, 12\).* one dtype"),
        (lambda i: {**i, "A": i["A"].to(torch.complex64)}, "A is complex64 .* real floating"),
        (
            lambda i: {**i, "A": torch.randn(8, 300), "B": torch.randn(2, 300, 12), "C": torch.randn(2, 300, 12)},
            r"A is float32 \(8, 300\).*N <= 256",
        ),
    ],
    ids=["fp64", "bf16-u-fp32-B", "fp16-z", "complex-A", "N300"],
)
def test_adapter_rejects_what_the_kernel_rejects_with_a_clear_error(scan, change, message: str) -> None:
    inputs = change({k: v.detach() for k, v in make_inputs(length=12).items()})
    with pytest.raises(ValueError, match=f"^selective_scan \\(mamba_ssm\\): {message}"):
        scan(**inputs, delta_softplus=True)
    assert not cuda_standin.calls  # raised before the kernel


@pytest.mark.parametrize(
    "change, check",
    [
        (lambda i: {**i, "u": i["u"].double()}, "input_type == Float"),
        (lambda i: {**i, "D": i["D"].bfloat16()}, "D.scalar_type"),
        (lambda i: {**i, "delta_bias": torch.randn(8, 2)[:, 0]}, "delta_bias.stride"),
        (lambda i: {**i, "B": i["B"].transpose(-1, -2).contiguous().transpose(-1, -2)}, "B.stride"),
        (lambda i: {**i, "B": i["B"][:, None, :, :5], "C": i["C"][:, None, :, :5]}, "B must have shape"),
        (lambda i: {**i, "B": torch.randn(2, 3, 4, 12), "C": torch.randn(2, 3, 4, 12)}, "dim % n_groups"),
    ],
    ids=["fp64-u", "bf16-D", "strided-bias", "strided-B", "B-length", "groups"],
)
def test_standin_asserts_where_the_kernel_does(change, check: str) -> None:
    """Without the adapter the stand-in itself fails, so the tests above can fail."""
    inputs = {k: v.detach() for k, v in make_inputs(length=12).items()}
    inputs["B"], inputs["C"] = inputs["B"][:, None], inputs["C"][:, None]
    inputs = change(inputs)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    with pytest.raises(KernelAssert, match=check):
        cuda_standin.selective_scan_fwd(*args, True)


def test_adapter_batch_zero_skips_the_kernel(scan) -> None:
    inputs = make_inputs(batch=0, groups=2)
    y, last, grads = _y_and_grads(scan, inputs)
    assert y.shape == (0, 8, 37) and last.shape == (0, 8, 4) and not cuda_standin.calls
    assert all(g.shape == inputs[k].shape and not g.abs().any() for k, g in grads.items())


def _conv_inputs(dim: int = 8, width: int = 4, length: int = 33, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, dim, length, generator=g).to(dtype).requires_grad_()
    return x, torch.randn(dim, width, generator=g).requires_grad_(), torch.randn(dim, generator=g).requires_grad_()


def _conv_grads(fn, x, w, b):
    for t in (x, w, b):
        t.grad = None
    y = fn(x, w, b)
    (y.float() * torch.randn(y.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    return y.detach(), x.grad, w.grad, b.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16-x-fp32-weight"])
@pytest.mark.parametrize("width", [2, 4])
def test_causal_conv1d_adapter_over_standin_matches_torch(conv, dtype: torch.dtype, width: int) -> None:
    x, w, b = _conv_inputs(width=width, dtype=dtype)
    want = _conv_grads(lambda *a: causal_conv1d_torch(a[0].float(), *a[1:]), x, w, b)
    got = _conv_grads(conv, x, w, b)
    assert cuda_standin.calls == {"causal_conv1d_fwd": 1, "causal_conv1d_bwd": 1}
    assert got[0].dtype == got[1].dtype == dtype and got[2].dtype == got[3].dtype == torch.float32
    rtol, atol = TOL[dtype]
    for name, a, e in zip(("y", "dx", "dweight", "dbias"), got, want):
        torch.testing.assert_close(a.float(), e.float(), rtol=rtol, atol=atol * 4, msg=lambda m, n=name: f"{n}: {m}")


def test_causal_conv1d_adapter_copies_layouts_the_kernel_rejects(conv) -> None:
    """Channel-last x with dim 6 (not a multiple of 8) asserts in the kernel; the adapter makes it contiguous."""
    x, w, b = _conv_inputs(dim=6)
    channel_last = x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    with pytest.raises(KernelAssert, match="dim % 8"):
        cuda_standin.causal_conv1d_fwd(
            channel_last.detach(), w.detach(), b.detach(), None, None, torch.empty(x.shape), None, True
        )
    torch.testing.assert_close(conv(channel_last, w, b), causal_conv1d_torch(x, w, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, w, b: (x.double(), w, b), "x is float64"),
        (lambda x, w, b: (x, torch.randn(8, 5), b), r"weight is float32 \(8, 5\).*width 2, 3 or 4"),
        (lambda x, w, b: (x, w, b.bfloat16()), "bias is bfloat16 .* weight's dtype float32"),
    ],
    ids=["fp64-x", "width5", "bias-dtype"],
)
def test_causal_conv1d_adapter_rejects_with_a_clear_error(conv, change, message: str) -> None:
    args = change(*(t.detach() for t in _conv_inputs()))
    with pytest.raises(ValueError, match=f"^causal_conv1d: {message}"):
        conv(*args)
    assert not cuda_standin.calls


MODELS = {
    "hybrimamba": dict(name="hybrimamba", embed_dim=8, depth=1, n_layers=1, d_state=4),
    "rhmc": dict(name="rhmc", embed_dim=8, depth=1, d_state=4),
    "mamba1d": dict(name="mamba1d", embed_dim=8, depth=1, n_layers=1, d_state=4),
}


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("name", MODELS)
def test_models_calls_satisfy_the_kernel_contract(scan, monkeypatch: pytest.MonkeyPatch, name: str, amp: bool) -> None:
    """Every scan the tiny models make, fp32 and under bf16 autocast, passes the adapter and the stand-in's checks."""
    torch.manual_seed(0)
    net = build_model(MODELS[name])
    x = torch.rand(1, 3, 16, 16)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = net(x)
        y.float().square().mean().backward()
        return y.detach().float(), [p.grad.clone() for p in net.parameters() if p.grad is not None]

    want, want_grads = run()  # the torch backend
    dtypes = set()

    def recording_scan(u, *args, **kwargs):
        dtypes.add(u.dtype)
        return scan(u, *args, **kwargs)

    bind_scan(net, ssm.Scan("mamba_ssm", recording_scan))
    got, got_grads = run()
    assert cuda_standin.calls["selective_scan_fwd"] >= 2 and cuda_standin.calls["selective_scan_bwd"] >= 2
    assert dtypes == {torch.bfloat16 if amp else torch.float32}
    tol = 5e-2 if amp else 1e-4
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    assert len(got_grads) == len(want_grads)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=tol * 10, atol=tol)


@pytest.mark.parametrize(
    "change, check",
    [
        (lambda x, w, b: (x.double(), w, b), "input_type == Float"),
        (lambda x, w, b: (x, torch.randn(8, 5), b), "width >= 2 && width <= 4"),
        (lambda x, w, b: (x, w, b.bfloat16()), "bias.scalar_type"),
        (lambda x, w, b: (torch.randn(2, 16, 66)[:, ::2, ::2], w, b), r"x.stride\(2\) == 1 \|\|"),
    ],
    ids=["fp64-x", "width5", "bias-dtype", "no-unit-stride"],
)
def test_conv_standin_asserts_where_the_kernel_does(change, check: str) -> None:
    x, w, b = change(*(t.detach() for t in _conv_inputs()))
    with pytest.raises(KernelAssert, match=check):
        cuda_standin.causal_conv1d_fwd(x, w, b, None, None, torch.empty(x.shape, dtype=x.dtype), None, True)


def test_adapter_operator_compiles_as_one_graph(scan) -> None:
    """The kernel behind fsr::mamba_scan_fwd/bwd traces as one opaque call: fullgraph aot_eager equals eager."""
    torch._dynamo.reset()
    inputs = make_inputs(length=20, groups=2)
    want = _y_and_grads(scan, inputs)
    got = _y_and_grads(torch.compile(scan, backend="aot_eager", fullgraph=True), inputs)
    torch._dynamo.reset()
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    for name, grad in got[2].items():
        torch.testing.assert_close(grad, want[2][name], rtol=1e-6, atol=1e-6)
