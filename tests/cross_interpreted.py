"""The fused cross-scan (``cross_selective_scan_triton``) under Triton's interpreter, against the composed path
(``cross_scan`` + the reference scan + ``cross_merge``): the merged y and the gradient of every input.

    TRITON_INTERPRET=1 python -m tests.cross_interpreted [CASE ...]

Run in its own process by ``tests/test_cross_scan.py`` (triton reads TRITON_INTERPRET at import); prints the
JSON that ``tests.helpers.interpreted.main`` describes.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

import model.ssm as ssm
from model.ssm.triton_scan import cross_selective_scan_triton
from tests.helpers.interpreted import GRAD_SCALE, TOLERANCES, compare, leaves, main, weighted_grads


@dataclasses.dataclass(frozen=True)
class CrossCase:
    name: str
    height: int
    width: int
    dtype: torch.dtype = torch.float32
    batch: int = 1
    di: int = 2
    n: int = 3
    chunk: int = 8
    D: bool = True
    bias: bool = True
    softplus: bool = True
    deterministic: bool = False


# H != W both ways, L = H*W never a multiple of the tile (a partial last tile), several tiles per direction.
CASES = (
    CrossCase("fp32-5x7-atomic", 5, 7, batch=2),
    CrossCase("fp32-7x3-deterministic", 7, 3, di=3, n=2, chunk=4, deterministic=True),
    CrossCase("bf16-3x6-atomic", 3, 6, dtype=torch.bfloat16, n=4, chunk=16),
    CrossCase("bf16-5x4-deterministic", 5, 4, dtype=torch.bfloat16, chunk=16, deterministic=True),
    CrossCase("fp32-1x6-plain", 1, 6, di=1, n=2, chunk=4, D=False, bias=False, softplus=False),
    # H a multiple of a thread's steps (the models' maps): each thread's positions are one position and the
    # direction's stride (RUNS). 4 steps a thread both ways over 3 tiles; bf16's backward 8 steps; the
    # models' forward tile, 16 steps a thread (4 fp32 parts) over 512, with a backward of 4 tiles.
    CrossCase("fp32-8x6-runs", 8, 6, n=3, chunk=16),
    CrossCase("bf16-8x12-runs-deterministic", 8, 12, dtype=torch.bfloat16, chunk=32, deterministic=True),
    CrossCase("fp32-16x32-runs-fwd16", 16, 32, di=1, n=2, chunk=512),
)


def make_inputs(case: CrossCase, seed: int = 0) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    b, di, n, length = case.batch, case.di, case.n, case.height * case.width

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    x = dict(
        x=rnd(b, di, case.height, case.width),
        delta=0.5 * rnd(b, 4 * di, length),
        A=-(0.5 + torch.rand(4 * di, n, generator=g)),
        B=rnd(b, 4, n, length),
        C=rnd(b, 4, n, length),
        D=rnd(4 * di) if case.D else None,
        delta_bias=0.5 * rnd(4 * di) if case.bias else None,
    )
    low = ("x", "delta", "B", "C")
    return {k: None if v is None else v.to(case.dtype if k in low else torch.float32) for k, v in x.items()}


def outputs_and_grads(fn, inputs: dict, softplus: bool) -> dict[str, torch.Tensor]:
    """y and the gradient of every given input for the loss sum(y * w), w a fixed random map."""
    inp = leaves(inputs)
    y = fn(**inp, delta_softplus=softplus)
    return {"y": y.detach().cpu(), **weighted_grads((y,), inp)}


def run_case(case: CrossCase, device: str = "cpu") -> dict[str, dict[str, float]]:
    inputs = make_inputs(case)
    fused = outputs_and_grads(
        lambda **kw: cross_selective_scan_triton(**kw, chunk=case.chunk, deterministic=case.deterministic),
        {k: None if v is None else v.to(device) for k, v in inputs.items()},
        case.softplus,
    )
    composed = outputs_and_grads(
        lambda **kw: ssm.cross_selective_scan(**kw, backend="reference"), inputs, case.softplus
    )
    rtol, atol = TOLERANCES[case.dtype]
    results = {}
    for name, want in composed.items():
        got = fused[name]
        assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, want.dtype, got.shape)
        r, a = GRAD_SCALE.get("du" if name == "dx" else name, (1, 1))
        results[name] = compare(got, want, r * rtol, a * atol)
    return results


if __name__ == "__main__":
    main(CASES, run_case, sys.argv[1:])
