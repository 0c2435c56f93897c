"""tools.export's portable scan and artifacts: the scan-operator forward against the reference, its ONNX graph
(an ONNX Scan, the same size for any L) in onnxruntime, and an AOTInductor package of a scanning network."""

from __future__ import annotations

import pytest
import torch

from model.ssm.chunked_scan import selective_scan_chunked_loop
from model.ssm.reference import selective_scan_reference

CHUNK = 8  # several chunks at test lengths, so both loops (inside and across chunks) run more than once


def _scan_inputs(length: int, grouped: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch, d, n, groups = 2, 6, 3, 2
    bc_shape = (batch, groups, n, length) if grouped else (batch, n, length)
    return dict(
        u=torch.randn(batch, d, length, generator=g),
        delta=torch.randn(batch, d, length, generator=g),
        A=-torch.rand(d, n, generator=g) - 0.1,
        B=torch.randn(*bc_shape, generator=g),
        C=torch.randn(*bc_shape, generator=g),
        D=torch.randn(d, generator=g),
        z=torch.randn(batch, d, length, generator=g),
        delta_bias=torch.randn(d, generator=g),
    )


def test_loop_scan_matches_reference_in_value_last_state_and_gradients() -> None:
    leaves = {k: v.requires_grad_() for k, v in _scan_inputs(37).items()}  # 37: a ragged last chunk (zero padded)
    g = torch.Generator().manual_seed(1)
    cotangents = (torch.randn(2, 6, 37, generator=g), torch.randn(2, 6, 3, generator=g))
    results = []
    for scan, extra in ((selective_scan_reference, {}), (selective_scan_chunked_loop, {"chunk": CHUNK})):
        outputs = scan(**leaves, delta_softplus=True, return_last_state=True, **extra)
        results.append((*outputs, *torch.autograd.grad(outputs, list(leaves.values()), cotangents)))
    for name, got, want in zip(["y", "last_state", *leaves], results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def test_loop_scan_without_options_matches_reference() -> None:
    t = _scan_inputs(37, grouped=False)
    t.update(delta=t["delta"].abs(), D=None, z=None, delta_bias=None)  # no softplus: positive delta, decays below 1
    want = selective_scan_reference(**t, return_last_state=True)
    got = selective_scan_chunked_loop(**t, return_last_state=True, chunk=CHUNK)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


class _ScanModule(torch.nn.Module):
    def __init__(self, A: torch.Tensor, D: torch.Tensor, delta_bias: torch.Tensor) -> None:
        super().__init__()
        self.A, self.D, self.delta_bias = torch.nn.Parameter(A), torch.nn.Parameter(D), torch.nn.Parameter(delta_bias)

    def forward(self, u, delta, B, C, z) -> torch.Tensor:
        return selective_scan_chunked_loop(
            u, delta, self.A, B, C, self.D, z, self.delta_bias, delta_softplus=True, chunk=CHUNK
        )


def _all_nodes(graph) -> list:
    """Every node of an onnx.GraphProto, subgraphs (Scan bodies) included."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.g.node:
                nodes += _all_nodes(attr.g)
    return nodes


def test_onnx_scan_is_a_loop_of_fixed_size_and_matches_in_onnxruntime(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    sizes = {}
    for length in (24, 200):  # 3 and 25 chunks
        t = _scan_inputs(length)
        net = _ScanModule(t.pop("A"), t.pop("D"), t.pop("delta_bias")).eval()
        args = (t["u"], t["delta"], t["B"], t["C"], t["z"])
        path = tmp_path / f"scan{length}.onnx"
        with torch.no_grad():
            torch.onnx.export(net, args, str(path), dynamo=True, optimize=False, external_data=False)
            want = selective_scan_reference(**t, A=net.A, D=net.D, delta_bias=net.delta_bias, delta_softplus=True)
        nodes = _all_nodes(onnx.load(str(path)).graph)
        assert sum(n.op_type == "Scan" for n in nodes) == 2, "passes 1 and 2 as ONNX Scan loops"
        sizes[length] = len(nodes)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)})[0]
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-5)
    assert sizes[24] == sizes[200], f"the graph grew with L: {sizes}"


# The cheapest registered network that scans: MambaIR with one residual group of one VSS block (one SS2D, 218
# exported nodes; mamba1d's tiny U-shape has 7 scanning blocks and 1346). It takes the 16x16 LR itself.
MAMBAIR_ONE_BLOCK = dict(name="mambair", embed_dim=30, depths=(1,), d_state=2, drop_path_rate=0.0)


def _checkpoint(tmp_path, model: dict) -> str:
    from model.build import build_network, scanning_modules
    from utils.checkpoint import save_checkpoint
    from utils.config import resolve_config

    torch.manual_seed(0)
    cfg = resolve_config({"model": model, "data": {"val": {"type": "sample", "hr_size": 128}}})
    net = build_network({"model": model, "ssm": {"backend": "torch"}})
    assert scanning_modules(net), "the exported network must contain a selective scan"
    state = {"model_name": model["name"], "model": net.state_dict(), "ema": None, "config": cfg}
    save_checkpoint({**state, "iteration": 0, "epoch": 0, "best_psnr": None}, tmp_path / "net.pt")
    return str(tmp_path / "net.pt")


@pytest.mark.parametrize("fmt", ["aoti", "onnx"])
def test_export_command_artifact_runs_on_cpu_and_matches_eager(tmp_path, fmt: str) -> None:
    """``aoti``: an AOTInductor package loaded with ``aoti_load_package``; ``onnx``: run in onnxruntime."""
    from tools.export import main

    if fmt == "onnx":
        for name in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(name)
    checkpoint, out = _checkpoint(tmp_path, MAMBAIR_ONE_BLOCK), tmp_path / ("net.pt2" if fmt == "aoti" else "net.onnx")
    assert main(["--checkpoint", checkpoint, "--format", fmt, "--out", str(out)]) < 1e-5
    assert out.is_file()


def test_aoti_out_must_be_a_pt2_file(capsys) -> None:
    from tools.export import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--checkpoint", "net.pt", "--format", "aoti", "--out", "net.so"])
    assert "--out must end in .pt2, got net.so" in capsys.readouterr().err


def test_onnx_export_failure_is_one_line(tmp_path, monkeypatch) -> None:
    from tools.export import main

    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name)

    def unsupported(*args, **kwargs):
        raise RuntimeError("Unsupported FX nodes: {'fsr.some_op': ...}\n(a long report follows)")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    checkpoint = _checkpoint(tmp_path, MAMBAIR_ONE_BLOCK)
    with pytest.raises(SystemExit, match=r"^error: no ONNX route for this network: Unsupported FX nodes: .*\.\.\.}$"):
        main(["--checkpoint", checkpoint, "--format", "onnx", "--out", str(tmp_path / "net.onnx")])
    assert not (tmp_path / "net.onnx").exists()
