"""torch.compile and torch.export readiness of the networks (tiny widths, 8-32 px inputs).

Tracing is checked with ``torch._dynamo.explain`` and numerics with the ``aot_eager`` backend (forward
and backward graphs as AOTAutograd makes them for inductor, run eagerly); inductor itself is left to
``python -m bench.compile`` (minutes per model on a CPU).

The cost of this file is the number of traced operations (dynamo's bytecode interpretation, AOTAutograd's
fake dispatch, strict export's static-shape guards), not the input size, so every network is built at its
minimal depth and each trace serves every check it can. Minimal depth keeps one block of every kind:
hybrimamba and mamba1d ``depth=1, n_layers=1`` (all seven U-Net stages, each one mixer + one LEM: MambaBlock
with FWM and symmetry, or Mamba1D), rhmc ``depth=1`` (all nine HMC stages, each one HMCB: RSSM, RMoE, FAM,
ConvFFN; the three SFBs), swinir one stage of two layers (plain and shifted windows; drop path on the second),
mambair one group of two blocks (drop path on the second), dic two steps (the first block, then the feedback
block), wfen one bottleneck FDT (shifted windows stay in the encoder and decoder), sfmnet one ResBlock per group
(its 14 stages per branch are fixed), sparnet ``res_depth=1`` at 32 px (two down, two body and two up units).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from model.build import bind_scan, build_network, compile_network, scanning_modules
from model.ssm import resolve_backend

MODELS = {
    "hybrimamba": dict(name="hybrimamba", embed_dim=8, depth=1, n_layers=1, d_state=4),
    "rhmc": dict(name="rhmc", embed_dim=8, depth=1, d_state=4),
    "mamba1d": dict(name="mamba1d", embed_dim=8, depth=1, n_layers=1, d_state=4),
    "sparnet": dict(name="sparnet", min_ch=8, max_ch=16, in_size=32, min_feat_size=8, res_depth=1),
}
SIZE = 16


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _net(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network({"model": MODELS[name], "ssm": {"backend": "torch"}})


def _input(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def eval_case():
    """``get(name)``: the eval network, a batch-1 input and the eager output, built once for the module's checks."""
    cases: dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = {}

    def get(name: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
        if name not in cases:
            net, x = _net(name).eval(), _input(1)
            with torch.no_grad():
                cases[name] = (net, x, net(x))
        return cases[name]

    return get


def test_backend_is_bound_to_every_scanning_module() -> None:
    net = _net("hybrimamba")
    scans = scanning_modules(net)
    assert len(scans) >= 2 and {m.scan_backend for m in scans} == {resolve_backend("torch", "cpu")}
    assert scanning_modules(_net("sparnet")) == []


class CountingAotEager:
    """The ``aot_eager`` backend, recording the graphs dynamo hands it (with ``fullgraph=True``, a break raises)."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []
        self.aot_eager = torch._dynamo.lookup_backend("aot_eager")

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs.append(gm)
        return self.aot_eager(gm, example_inputs)


def _l1_loss(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (net(x) - y).abs().mean()


@pytest.mark.parametrize(
    "name, batches",
    [("hybrimamba", (2,)), ("rhmc", (2,)), ("mamba1d", (2, 3))],
    ids=["hybrimamba", "rhmc", "mamba1d-dynamic-batch"],
)
def test_aot_eager_training_step_matches_eager(name: str, batches: tuple[int, ...]) -> None:
    """Forward + L1 + backward + AdamW step, the loss compiled with fullgraph=True: the train-mode forward and the
    loss trace as one graph with no break (a break raises), and loss, gradients and updated weights equal eager.
    With two batch sizes the batch is marked dynamic: the second step reuses the one graph (no recompile)."""
    eager = _net(name)
    compiled = copy.deepcopy(eager)
    backend = CountingAotEager()
    steps = ((eager, _l1_loss), (compiled, torch.compile(_l1_loss, backend=backend, fullgraph=True)))
    optimizers = [torch.optim.AdamW(net.parameters(), lr=1e-3) for net, _ in steps]
    for batch in batches:
        x, y = _input(batch), _input(batch, seed=2)
        if len(batches) > 1:
            torch._dynamo.mark_dynamic(x, 0)
            torch._dynamo.mark_dynamic(y, 0)
        results = []
        for (net, fn), opt in zip(steps, optimizers):
            opt.zero_grad(set_to_none=True)
            loss = fn(net, x, y)
            loss.backward()
            grads = [p.grad.clone() for p in net.parameters()]
            opt.step()
            results.append((loss.detach(), grads, [p.detach().clone() for p in net.parameters()]))
        (loss_e, grads_e, params_e), (loss_c, grads_c, params_c) = results
        assert len(backend.graphs) == 1
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads_c + params_c, grads_e + params_e):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# bf16 autocast: aot_eager may re-order or fuse bf16 products; allowed: one bf16 rounding (2**-8 = 3.9e-3,
# relative and absolute). Measured on CPU, torch 2.14.1: 0.0 (the same aten ops in the same order). HybriMamba holds
# every autocast-specific path of the networks: the scan's and the wavelets' autocast-off regions (model.wavelet's
# DWT2d/IDWT2d, which RHMC's STB/SFB use too), FWM's FFT promoted to fp32 and the dtype casts around it.
BF16_TOLERANCE = dict(rtol=2**-8, atol=2**-8)


def test_bf16_autocast_forward_is_one_graph_and_matches_eager() -> None:
    """Under CPU bf16 autocast (eval): fullgraph=True (0 breaks), one graph, aot_eager equal to eager within bf16."""
    net = _net("hybrimamba").eval()
    x = _input(1)
    backend = CountingAotEager()
    compiled = torch.compile(net, backend=backend, fullgraph=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = net(x), compiled(x)
    assert len(backend.graphs) == 1
    assert got.dtype == want.dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, **BF16_TOLERANCE)


def _fake_forward_backward(
    net: torch.nn.Module, device: str, backward: bool = True, x_shape: tuple = (2, 3, SIZE, SIZE)
) -> tuple:
    """The network's forward and parameter gradients with every tensor fake (weights built real, then faked)."""
    with FakeTensorMode() as mode:
        params = {k: mode.from_tensor(v).to(device).requires_grad_(v.requires_grad) for k, v in net.named_parameters()}
        buffers = {k: mode.from_tensor(v).to(device) for k, v in net.named_buffers()}
        y = torch.func.functional_call(net, {**params, **buffers}, (torch.rand(*x_shape, device=device),))
        grads = torch.autograd.grad(y.sum(), list(params.values())) if backward else None
    return y, params, grads


@pytest.mark.parametrize("name", ["hybrimamba", "rhmc", "mamba1d"])
def test_networks_run_on_fake_cpu_tensors(name: str) -> None:
    y, params, grads = _fake_forward_backward(_net(name), "cpu")
    assert y.shape == (2, 3, SIZE, SIZE)
    assert [g.shape for g in grads] == [p.shape for p in params.values()]


@pytest.mark.parametrize("name", ["hybrimamba", "mamba1d"])
def test_networks_run_on_fake_cuda_tensors_with_triton(name: str) -> None:
    pytest.importorskip("triton")
    initialised = torch.cuda.is_initialized()
    torch.manual_seed(0)
    net = build_network({"model": MODELS[name]}, "cpu", scan=resolve_backend("triton", "cuda"))
    # the forward only: autograd's engine itself needs a CUDA device for CUDA tensors, fake or not
    y, _, _ = _fake_forward_backward(net, "cuda", backward=False)
    assert y.shape == (2, 3, SIZE, SIZE) and y.device.type == "cuda"
    assert torch.cuda.is_initialized() == initialised


def test_triton_operators_have_fake_kernels_for_cuda() -> None:
    """Both Triton operators (forward, and the backward the autograd formula calls) on fake CUDA tensors."""
    pytest.importorskip("triton")
    from model.ssm.triton_scan import saved_states_shape, triton_scan_bwd, triton_scan_fwd

    with FakeTensorMode():
        u = torch.empty(2, 8, 37, device="cuda", dtype=torch.bfloat16)
        A, D, B = torch.empty(8, 4, device="cuda"), torch.empty(8, device="cuda"), u.new_empty(2, 2, 4, 37)
        y, last, states = triton_scan_fwd(u, u, A, B, B, D, u, D, True, 16, False)
        grads = triton_scan_bwd(u, u, A, B, B, D, u, D, states, y, last, True, 16, False)
    assert (y.dtype, y.shape, last.dtype, last.shape) == (u.dtype, u.shape, torch.float32, (2, 8, 4))
    assert tuple(states.shape) == saved_states_shape(2, 8, 37, 4, 16)
    assert [tuple(g.shape) for g in grads] == [tuple(t.shape) for t in (u, u, A, B, B, D, u, D)]


# mamba1d's non-strict export is test_export_command_writes_a_program_that_matches (export, save, load, compare);
# sparnet's exports are in the Table 1 test below.
@pytest.mark.parametrize(
    "name, strict",
    [("hybrimamba", False), ("hybrimamba", True), ("rhmc", False), ("rhmc", True), ("mamba1d", True)],
    ids=["hybrimamba-non-strict", "hybrimamba-strict", "rhmc-non-strict", "rhmc-strict", "mamba1d-strict"],
)
def test_export_in_eval_mode(name: str, strict: bool, eval_case) -> None:
    net, x, want = eval_case(name)
    with torch.no_grad():
        program = torch.export.export(net, (x,), strict=strict)
        torch.testing.assert_close(program.module()(x), want, rtol=1e-5, atol=1e-5)


def test_portable_scan_exports_without_project_operators() -> None:
    from tools.export import portable_scan

    net = _net("mamba1d").eval()
    x = _input(1)
    with torch.no_grad():
        want = net(x)
        program = torch.export.export(bind_scan(net, portable_scan()), (x,), strict=False)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any(t.startswith(("fsr", "fsr_selective_scan")) for t in targets)
    torch.testing.assert_close(program.module()(x), want, rtol=1e-5, atol=1e-5)


def test_compile_network_keeps_state_dict_keys() -> None:
    net = _net("mamba1d")
    keys = list(net.state_dict())
    assert compile_network(net, "none") is net
    compile_network(net, "default")
    assert list(net.state_dict()) == keys
    regional = compile_network(_net("mamba1d"), "default", regional=True)
    assert list(regional.state_dict()) == keys and regional._compiled_call_impl is None
    assert all(m._compiled_call_impl is not None for m in scanning_modules(regional))
    with pytest.raises(ValueError, match="compile mode must be one of none, default, max-autotune"):
        compile_network(net, "fast")


def test_whole_network_compile_bounds_inductor_fusion_search(monkeypatch) -> None:
    calls: list[tuple[torch.nn.Module, dict]] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **options: calls.append((self, options)))
    net = _net("mamba1d")
    compile_network(net, "max-autotune")
    [(module, options)] = calls
    assert module is net and options["options"]["max_autotune"] is True  # the mode's own options kept
    assert options["options"]["max_fusion_buffer_group_pairwise_attempts"] == 8
    assert options["options"]["reorder_for_peak_memory"] is False
    calls.clear()
    compile_network(net, "default", regional=True)
    assert [m for m, _ in calls] == scanning_modules(net)
    assert all(o == {"mode": "default", "dynamic": False} for _, o in calls)


def test_train_compile_key_is_validated() -> None:
    from utils.config import ConfigError, resolve_config

    assert resolve_config({})["train"]["compile"] == "none"
    with pytest.raises(ConfigError, match="'train.compile' must be one of"):
        resolve_config({"train": {"compile": "fast"}})


def test_export_command_writes_a_program_that_matches(tmp_path) -> None:
    from tools.export import main
    from utils.checkpoint import save_checkpoint
    from utils.config import resolve_config

    cfg = resolve_config({"model": MODELS["mamba1d"], "data": {"val": {"type": "sample", "hr_size": SIZE}}})
    state = {"model_name": "mamba1d", "model": _net("mamba1d").state_dict(), "ema": None, "config": cfg}
    save_checkpoint({**state, "iteration": 0, "epoch": 0, "best_psnr": None}, tmp_path / "net.pt")
    out = tmp_path / "net.pt2"
    assert main(["--checkpoint", str(tmp_path / "net.pt"), "--format", "exported-program", "--out", str(out)]) < 1e-5
    assert out.is_file()


def test_fwm_polar_matches_abs_and_angle_with_gradients() -> None:
    """FWM's magnitude/phase from view_as_real equal abs()/angle() in value and gradient, zeros included."""
    from model.hybrimamba import polar

    x = torch.randn(2, 6, 9, 8, generator=torch.Generator().manual_seed(0)).to(memory_format=torch.channels_last)
    x[0, 0] = 0  # an all-zero channel: a zero spectrum, where abs/angle have zero gradients
    for which in (0, 1):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        za, zb = torch.fft.rfft2(xa, norm="ortho"), torch.fft.rfft2(xb, norm="ortho")
        want, got = (za.abs(), za.angle()), polar(zb)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
        cotangent = torch.randn(want[which].shape, generator=torch.Generator().manual_seed(1))
        (want[which] * cotangent).sum().backward()
        (got[which] * cotangent).sum().backward()
        torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)


# The Table 1 networks (minimal depth, see the module docstring; each at the input it takes): the train-mode
# forward and L1 trace as one graph with 0 breaks (what torch.compile traces of a training step: AOTAutograd makes
# the backward, and the scanning networks' test above runs it), the eval network runs on fake tensors, and strict and
# non-strict export equal eager. One network and one eager output per network serve all of them.
TABLE1 = {
    "swinir": ({"name": "swinir", "embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4}, 8),
    "mambair": ({"name": "mambair", "embed_dim": 30, "depths": (2,), "d_state": 2}, 8),
    "dic": ({"name": "dic", "dim": 8, "n_steps": 2, "groups": 2, "hg_dim": 16, "n_fusion": 1}, 16),
    "sfmnet": ({"name": "sfmnet", "dim": 8, "n_resblocks": 1}, 32),
    "wfen": ({"name": "wfen", "min_ch": 8, "res_depth": 1}, 32),
    "sparnet": (MODELS["sparnet"], SIZE),
}


def _l1_to_half(out: object) -> torch.Tensor:
    """An L1 loss over every output (DIC and SFMNet return a dict of outputs in train mode)."""
    return sum((leaf - 0.5).abs().mean() for leaf in torch.utils._pytree.tree_leaves(out))


@pytest.fixture(scope="module", params=list(TABLE1))
def table1_case(request) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A Table 1 network (left in eval mode), its input and its eager eval output."""
    cfg, size = TABLE1[request.param]
    torch.manual_seed(0)
    net = build_network({"model": cfg}).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return net, x, net(x)


def test_table1_training_forward_is_one_graph(table1_case) -> None:
    net, x, _ = table1_case
    net = copy.deepcopy(net).train()  # a copy: the train-mode run updates norm statistics the other checks share
    explained = torch._dynamo.explain(lambda: _l1_to_half(net(x)))()
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_table1_networks_run_on_fake_tensors(table1_case) -> None:
    net, x, want = table1_case
    y, _, _ = _fake_forward_backward(net, "cpu", backward=False, x_shape=x.shape)
    assert y.shape == want.shape


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_table1_networks_export(table1_case, strict: bool) -> None:
    net, x, want = table1_case
    with torch.no_grad():
        program = torch.export.export(net, (x,), strict=strict)
        torch.testing.assert_close(program.module()(x), want, rtol=1e-5, atol=1e-5)
