"""The Triton scan kernels under Triton's interpreter, compared with the reference scan.

    TRITON_INTERPRET=1 python -m tests.triton_interpreted [CASE ...]

Run in its own process by ``tests/test_ssm_triton.py`` (triton reads TRITON_INTERPRET at import); prints the
JSON that ``tests.helpers.interpreted.main`` describes.
Sizes are tiny: the interpreter costs milliseconds per program per chunk step.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from model.ssm.reference import selective_scan_reference
from model.ssm.triton_scan import selective_scan_triton
from tests.helpers.interpreted import GRAD_SCALE, TOLERANCES, compare, leaves, main, weighted_grads


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    dtype: torch.dtype = torch.float32
    batch: int = 2
    d: int = 4
    n: int = 4
    length: int = 11
    chunk: int = 4
    groups: int | None = None  # None: B, C of shape (batch, N, L)
    z: bool = True
    D: bool = True
    bias: bool = True
    softplus: bool = True
    last_state: bool = True
    deterministic: bool = False  # dB, dC without atomics
    delta_range: tuple[float, float] | None = None  # uniform delta instead of randn
    tolerance: tuple[float, float] | None = None  # (rtol, atol) instead of the dtype's


CASES = (
    Case("fp32-plain", groups=None, z=False, D=False, bias=False, softplus=False),
    Case("fp32-G1-all", groups=1),
    Case("fp32-G4-all", d=8, groups=4),
    Case("fp32-G4-ss2d-N3", d=8, n=3, groups=4, z=False, last_state=False),
    Case("fp32-G2-z-only-y-loss", groups=2, D=False, bias=False, last_state=False),
    Case("fp32-L-multiple-of-chunk", length=8, groups=4),
    Case("fp32-L-below-chunk", length=3, chunk=8, groups=None),
    Case(
        "fp32-large-delta-N16",
        batch=1,
        d=2,
        n=16,
        length=9,
        groups=None,
        softplus=False,
        bias=False,
        delta_range=(1.0, 6.0),
    ),  # fmt: skip
    # delta ~ 20: decays of e^-10 .. e^-30. The backward forms decay_t h_{t-1} as h_t - delta_t u_t B_t (as
    # mamba_ssm does, no shifted state), which cancels here: dA is off by ~1e-4 absolute where it is ~0, so
    # this case uses mamba_ssm's CUDA-vs-reference fp32 tolerance.
    Case("fp32-softplus-threshold", groups=4, d=4, z=False, delta_range=(15.0, 25.0), tolerance=(6e-4, 2e-3)),
    Case("fp32-batch-0", batch=0, groups=4),
    # The tiling: one tile of 8 over L 5 (a padded tile), N from 1 to 16 with non-powers of two (the states
    # are unrolled per N), tiles of 2 steps over L 7, and the atomic-free dB/dC.
    Case("fp32-L-below-tile-N5", length=5, chunk=16, n=5, groups=2),
    Case("fp32-N1", n=1, groups=None, length=7, chunk=2),
    Case("fp32-N7-G4", d=8, n=7, groups=4, length=13),
    Case("fp32-N12-deterministic", d=4, n=12, groups=2, deterministic=True),
    # Tiles of 64 steps: 16 threads of 4 steps (forward and fp32 backward), so the scans across threads (forward
    # and reverse) and the tile-to-tile carries run with many threads; L 150 ends in a partial tile.
    Case("fp32-threads-L150-N5", batch=1, d=2, n=5, length=150, chunk=64, groups=2),
    Case("bf16-threads-L128-N3", dtype=torch.bfloat16, batch=1, d=2, n=3, length=128, chunk=64, groups=None),
    # The models' forward tile: 32 threads of 16 steps (4 fp32 parts, 2 bf16 ones) over 512 steps, saving the
    # state entering every backward tile (128 steps here, fp32 and bf16 with z: 3 inside each forward tile);
    # L, a multiple of 16 (vector loads), ends in a partial tile whose last saved slots fall past L.
    Case("fp32-fwd16-L1104-N3", batch=1, d=2, n=3, length=1104, chunk=512, groups=None),
    Case("bf16-fwd16-L720-N2-z", dtype=torch.bfloat16, batch=1, d=2, n=2, length=720, chunk=512, groups=None),
    Case("bf16-G4-deterministic", dtype=torch.bfloat16, d=8, groups=4, deterministic=True, z=False),
    Case("bf16-G4-all", dtype=torch.bfloat16, d=8, groups=4),
    Case("bf16-plain", dtype=torch.bfloat16, groups=None, z=False, D=False, bias=False, softplus=False),
    Case("fp16-G1-all", dtype=torch.float16, groups=1),
)

# On CUDA (make gpu-check): the same cases and tiles of the real size, at mamba_ssm's CUDA tolerances.
CUDA_CASES = tuple(
    dataclasses.replace(c, tolerance=c.tolerance or (6e-4, 2e-3)) for c in CASES if c.dtype == torch.float32
)
CUDA_CASES += (
    Case("cuda-fp32-L5000-N16-G4", d=16, n=16, length=5000, chunk=2048, groups=4, tolerance=(6e-4, 2e-3)),
    Case("cuda-bf16-L5000-N8-G4", dtype=torch.bfloat16, d=16, n=8, length=5000, chunk=2048, groups=4, z=False),
    Case("cuda-fp32-L300-N16", d=8, n=16, length=300, chunk=2048, groups=None, tolerance=(6e-4, 2e-3)),
)


def make_inputs(case: Case, seed: int = 0) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    b, d, n, length = case.batch, case.d, case.n, case.length

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    if case.delta_range is not None:
        lo, hi = case.delta_range
        delta = lo + (hi - lo) * torch.rand(b, d, length, generator=g)
    else:
        delta = 0.5 * rnd(b, d, length)
    bc_shape = (b, n, length) if case.groups is None else (b, case.groups, n, length)
    x = dict(
        u=rnd(b, d, length),
        delta=delta,
        A=-(0.5 + torch.rand(d, n, generator=g)),
        B=rnd(*bc_shape),
        C=rnd(*bc_shape),
        D=rnd(d) if case.D else None,
        z=rnd(b, d, length) if case.z else None,
        delta_bias=0.5 * rnd(d) if case.bias else None,
    )
    low = ("u", "delta", "B", "C", "z")
    return {k: None if v is None else v.to(case.dtype if k in low else torch.float32) for k, v in x.items()}


def run_case(case: Case, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Forward values, last state, and the gradient of every input, Triton (on ``device``) vs reference."""
    inputs = make_inputs(case)
    rtol, atol = case.tolerance or TOLERANCES[case.dtype]
    results, grads, outputs = {}, [], []
    ours = {"chunk": case.chunk, "deterministic": case.deterministic}
    for fn, kwargs, dev in ((selective_scan_triton, ours, device), (selective_scan_reference, {}, "cpu")):
        inp = leaves(inputs, dev)
        out = fn(**inp, delta_softplus=case.softplus, return_last_state=case.last_state, **kwargs)
        y, last = out if case.last_state else (out, None)
        outputs.append((y, last))
        grads.append(weighted_grads((y, last), inp))
    (y, last), (y_ref, last_ref) = outputs
    y, last = y.cpu(), None if last is None else last.cpu()
    assert y.dtype == y_ref.dtype == case.dtype, (y.dtype, y_ref.dtype)
    results["y"] = compare(y, y_ref, rtol, atol)
    if last is not None:
        assert last.dtype == torch.float32
        results["last_state"] = compare(last, last_ref, rtol, atol)
    for name, grad in grads[0].items():
        ref = grads[1][name]
        assert grad.dtype == ref.dtype and grad.shape == ref.shape, (name, grad.dtype, ref.dtype, grad.shape)
        r, a = GRAD_SCALE.get(name, (1, 1))
        results[name] = compare(grad, ref, r * rtol, a * atol)
    return results


if __name__ == "__main__":
    main(CASES, run_case, sys.argv[1:])
