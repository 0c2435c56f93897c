"""SS2D's core as one operator (``model.ssm.cross_selective_scan``): the fused Triton kernels (interpreted)
against the composed path, the composed path against the formula it replaced, dispatch, errors, fake tensors."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import model.ssm as ssm
from model.ss2d import SS2D
from model.ssm.cross import cross_merge, cross_scan, direction_order
from tests.cross_interpreted import CASES, make_inputs, outputs_and_grads

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def interpreted() -> dict:
    from tests.test_ssm_triton import _run  # the interpreter's own process

    proc = _run(["-m", "tests.cross_interpreted"], interpret=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fused_cross_scan_matches_composed(interpreted: dict, case) -> None:
    """Merged y and the gradient of x, delta, A, B, C (D, delta_bias) within the scan's tolerances."""
    result = interpreted[case.name]
    expected = {"y", "dx", "ddelta", "dA", "dB", "dC"} | ({"dD"} if case.D else set())
    assert set(result) == expected | ({"ddelta_bias"} if case.bias else set())
    failed = {k: v for k, v in result.items() if v["excess"] > 0}
    assert not failed, f"{case.name}: {failed}"


def test_direction_order_is_the_projection_of_the_cross_scan() -> None:
    """x_proj in spatial order, then direction_order == x_proj of each cross-scanned sequence (what SS2D did)."""
    torch.manual_seed(0)
    weight, x = torch.randn(4, 5, 6), torch.randn(2, 6, 3, 4)
    spatial = torch.matmul(weight.flatten(0, 1), x.flatten(2)).view(2, 4, 5, 12)
    torch.testing.assert_close(direction_order(spatial, 3, 4), torch.matmul(weight, cross_scan(x)))


def _old_core(block: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D.forward_core before the fused operator: cross-scanned sequences, projected per direction."""
    batch, di, height, width = x.shape
    xs = cross_scan(x)
    x_dbl = torch.matmul(block.x_proj_weight, xs)
    dts, Bs, Cs = torch.split(x_dbl, [block.dt_rank, block.d_state, block.d_state], dim=2)
    dts = torch.matmul(block.dt_projs_weight, dts)
    y = ssm.selective_scan(
        xs.reshape(batch, -1, height * width), dts.reshape(batch, -1, height * width), -torch.exp(block.A_logs),
        Bs.contiguous(), Cs.contiguous(), D=block.Ds, delta_bias=block.dt_projs_bias.view(-1), delta_softplus=True,
        backend="torch",
    )  # fmt: skip
    return cross_merge(y.view(batch, 4, di, -1), height, width)


def test_composed_core_equals_the_formula_it_replaced() -> None:
    torch.manual_seed(0)
    block = SS2D(d_model=8, d_state=4, expand=1.5)
    block.scan_backend = ssm.resolve_backend("torch", "cpu")
    x = torch.randn(2, block.d_inner, 5, 3, requires_grad=True)
    new, old = block.forward_core(x), _old_core(block, x)
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-6)
    leaves = [x, *block.parameters()]
    leaves = [p for p in leaves if p.requires_grad]
    g_new = torch.autograd.grad(new.square().sum(), leaves, allow_unused=True)
    g_old = torch.autograd.grad(old.square().sum(), leaves, allow_unused=True)
    for a, b in zip(g_new, g_old):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cross_launch_options_follow_the_map() -> None:
    """RUNS (a thread's positions from one position and the direction's stride) exactly where H is a multiple of
    its steps; 128 registers at most for the 16-step forward and the 8-step (16-bit) backward, no cap otherwise."""
    from model.ssm.triton_scan import CHUNK, _register_cap_checked, cross_backward_launch, cross_forward_launch

    cap = 128 if _register_cap_checked() else None

    def metas(height: int, width: int, dtype: torch.dtype) -> tuple[dict, dict]:
        x = torch.empty(1, 2, height, width, dtype=dtype)
        delta, B = torch.empty(1, 8, height * width, dtype=dtype), torch.empty(1, 4, 4, height * width, dtype=dtype)
        A, D = torch.empty(8, 4), torch.empty(8)
        _, fwd, (_, states) = cross_forward_launch(x, delta, A, B, B, D, D, True, CHUNK, False)
        _, bwd, _ = cross_backward_launch((x, delta, A, B, B, D, D, states), x, True, CHUNK, True)
        return fwd, bwd

    for height, width, dtype, runs in ((128, 128, torch.float32, True), (32, 48, torch.bfloat16, True),
                                       (24, 32, torch.float32, False), (5, 7, torch.float32, False)):  # fmt: skip
        fwd, bwd = metas(height, width, dtype)
        assert fwd["RUNS"] == (height % fwd["S"] == 0) == runs and bwd["RUNS"] == (height % bwd["S"] == 0)
        assert fwd.get("maxnreg") == (cap if fwd["S"] == 16 else None)
        assert bwd.get("maxnreg") == (cap if dtype == torch.bfloat16 else None) and bwd["S"] == 16 // dtype.itemsize
        assert fwd["CROSS"] and bwd["CROSS"] and fwd["ATOMIC"] and not bwd["ATOMIC"]
    assert metas(128, 128, torch.float32)[0]["S"] == 16 and metas(5, 7, torch.float32)[0]["S"] == 4


@pytest.mark.parametrize(
    ("version", "capped"), [("3.8.0", True), ("3.9.0", False), ("3.0.0", False), ("3.10.1", False)]
)
def test_register_cap_only_on_checked_triton(monkeypatch: pytest.MonkeyPatch, version: str, capped: bool) -> None:
    """The 128-register cap only on a triton release whose compiles under it were checked spill-free."""
    import triton

    from model.ssm import triton_scan

    monkeypatch.setattr(triton, "__version__", version)
    triton_scan._register_cap_checked.cache_clear()
    try:
        meta = triton_scan._cross_meta({"S": 16, "P": 4}, torch.empty(1, 2, 32, 32), deterministic=False)
    finally:
        triton_scan._register_cap_checked.cache_clear()
    assert meta.get("maxnreg") == (128 if capped else None)


def test_bad_shapes_are_named() -> None:
    x = torch.zeros(1, 2, 3, 4)
    delta, A, B = torch.zeros(1, 8, 12), torch.zeros(8, 3), torch.zeros(1, 4, 3, 12)
    with pytest.raises(ValueError, match=r"x must be \(batch, Di, H, W\), got shape \(1, 2, 12\)"):
        ssm.cross_selective_scan(x.flatten(2), delta, A, B, B)
    with pytest.raises(ValueError, match=r"delta must be \(1, 8, 12\) for x \(1, 2, 3, 4\), got \(1, 8, 11\)"):
        ssm.cross_selective_scan(x, delta[..., :11], A, B, B)
    with pytest.raises(ValueError, match=r"B and C must be \(1, 4, N, L\), got \(1, 2, 3, 12\)"):
        ssm.cross_selective_scan(x, delta, A, B[:, :2], B[:, :2])
    with pytest.raises(ValueError, match=r"A must be \(d=8, N\)"):
        ssm.cross_selective_scan(x, delta, A[:4], B, B)


def test_triton_dispatches_to_the_fused_operator_with_its_keywords(monkeypatch: pytest.MonkeyPatch) -> None:
    """triton (and only triton) has a fused core; the bound scan's keywords (deterministic) reach it; FLOPs count."""
    from model.ssm.triton_scan import cross_selective_scan_triton, selective_scan_triton

    ssm.resolve_backend("triton", "cuda")
    ssm.resolve_backend("torch", "cpu")
    assert ssm._FUSED_CROSS == {"triton": cross_selective_scan_triton}
    seen = {}

    def spy(x, delta, A, B, C, D, delta_bias, softplus, **keywords):
        seen.update(keywords, softplus=softplus)
        return torch.zeros_like(x)

    monkeypatch.setitem(ssm._FUSED_CROSS, "triton", spy)
    inputs = make_inputs(CASES[0])
    scan = ssm.Scan("triton", functools.partial(selective_scan_triton, deterministic=True))
    with ssm.count_scan_flops() as flops:
        y = ssm.cross_selective_scan(**inputs, delta_softplus=True, backend=scan)
    assert seen == {"deterministic": True, "softplus": True} and y.shape == inputs["x"].shape
    case = CASES[0]
    assert flops[0] == ssm.scan_flops(case.batch, 4 * case.di, case.height * case.width, case.n, True, False)


def test_composed_backends_agree_with_the_reference() -> None:
    """The torch backend's composed core against the reference's (same cross_scan/merge, two scans)."""
    inputs = make_inputs(CASES[0])
    torch_ = outputs_and_grads(lambda **kw: ssm.cross_selective_scan(**kw, backend="torch"), inputs, True)
    ref = outputs_and_grads(lambda **kw: ssm.cross_selective_scan(**kw, backend="reference"), inputs, True)
    for name, want in ref.items():
        torch.testing.assert_close(torch_[name], want, rtol=1e-4, atol=1e-5)


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


def test_fused_operators_on_fake_cuda_tensors() -> None:
    """SS2D on fake CUDA tensors with the triton backend runs the fused operator (no CUDA initialised), and
    the backward operator gives every gradient's shape."""
    from model.ssm.triton_scan import saved_states_shape, triton_cross_scan_bwd, triton_cross_scan_fwd

    initialised = torch.cuda.is_initialized()
    torch.manual_seed(0)
    block = SS2D(d_model=8, d_state=4, expand=1.5)
    block.scan_backend = ssm.resolve_backend("triton", "cuda")
    with FakeTensorMode() as mode:
        params = {k: mode.from_tensor(v).to("cuda") for k, v in block.named_parameters()}
        ops = _Ops()
        with ops:
            y = torch.func.functional_call(block, params, (torch.rand(2, 5, 3, 8, device="cuda"),))
        x = torch.empty(2, 6, 5, 3, device="cuda", dtype=torch.bfloat16)
        delta, B = x.new_empty(2, 24, 15), x.new_empty(2, 4, 4, 15)
        A, D = torch.empty(24, 4, device="cuda"), torch.empty(24, device="cuda")
        out, states = triton_cross_scan_fwd(x, delta, A, B, B, D, D, True, 8, False)
        grads = triton_cross_scan_bwd(x, delta, A, B, B, D, D, states, out, True, 8, True)
    assert y.shape == (2, 5, 3, 8) and y.device.type == "cuda"
    assert "fsr.triton_cross_scan_fwd.default" in ops.names and "fsr.triton_scan_fwd.default" not in ops.names
    assert (out.dtype, out.shape) == (x.dtype, x.shape)
    assert tuple(states.shape) == saved_states_shape(2, 24, 15, 4, 8)
    assert [tuple(g.shape) for g in grads] == [tuple(t.shape) for t in (x, delta, A, B, B, D, D)]
    assert [g.dtype for g in grads[:2]] == [x.dtype, delta.dtype]
    assert torch.cuda.is_initialized() == initialised


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (make gpu-check)")
@pytest.mark.parametrize("deterministic", [False, True])
def test_fused_matches_composed_on_cuda(deterministic: bool) -> None:
    """At a real map size (64x48, several 128-step tiles per direction) against the composed reference."""
    from model.ssm.triton_scan import cross_selective_scan_triton
    from tests.cross_interpreted import CrossCase

    case = CrossCase("cuda", 64, 48, batch=2, di=8, n=16, chunk=1024, deterministic=deterministic)
    inputs = make_inputs(case)
    fused = outputs_and_grads(
        lambda **kw: cross_selective_scan_triton(**kw, deterministic=deterministic),
        {k: None if v is None else v.cuda() for k, v in inputs.items()},
        True,
    )
    want = outputs_and_grads(lambda **kw: ssm.cross_selective_scan(**kw, backend="reference"), inputs, True)
    for name, ref in want.items():
        torch.testing.assert_close(fused[name], ref, rtol=6e-4, atol=2e-3, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (make gpu-check)")
def test_deterministic_cross_scan_is_bitwise_reproducible_on_cuda() -> None:
    from model.ssm.triton_scan import cross_selective_scan_triton
    from tests.cross_interpreted import CrossCase

    inputs = make_inputs(CrossCase("repro", 64, 48, batch=2, di=8, n=16))
    fn = functools.partial(cross_selective_scan_triton, deterministic=True)
    runs = [outputs_and_grads(fn, {k: None if v is None else v.cuda() for k, v in inputs.items()}, True) for _ in "ab"]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_byte_count_prices_operations_and_skips_views() -> None:
    """bench.ss2d_bytes: an op reads its inputs and writes its outputs once; views and allocations are free; an
    expanded operand counts once."""
    from bench.ss2d_bytes import ByteCount

    with FakeTensorMode():
        a, w = torch.empty(2, 3), torch.empty(5, 3)
        counter = ByteCount()
        with counter:
            a.t().flip(-1)  # 24 B in, 24 B out
            torch.empty(7)
            torch.bmm(w.expand(4, 5, 3), torch.empty(4, 3, 2))  # 60 + 96 in, 160 out
    assert counter.ops == {"aten.flip": 48, "aten.bmm": 316}


def test_ss2d_bytes_counts_both_paths() -> None:
    """On a small core: the fused path runs no unfused scan and moves fewer bytes than the composed one; the
    ordered merge costs 3 read-and-writes of the fp32 map more than the atomic one, each way."""
    from bench.ss2d_bytes import Core, count

    core = Core(d_model=8, di=16, dt_rank=1, d_state=4, height=12, width=10)
    composed = count(core, 2, torch.float32, "composed")
    fused, ordered = count(core, 2, torch.float32, "fused"), count(core, 2, torch.float32, "fused", ordered=True)
    assert set(composed["kernels"]) >= {"scan kernel fwd", "scan kernel bwd"}
    assert "fused kernel fwd" in fused["kernels"] and not any(k.startswith("scan kernel") for k in fused["kernels"])
    total = {k: v["forward"] + v["backward"] for k, v in (("c", composed), ("f", fused))}
    assert total["f"] < 0.6 * total["c"]
    m = 2 * 16 * 12 * 10 * 4  # the fp32 map
    for way in ("forward", "backward"):
        assert ordered[way] - fused[way] == 3 * 2 * m - m  # no zero fill when ordered
