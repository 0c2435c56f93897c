"""What the two interpreter scripts (``tests.triton_interpreted``, ``tests.cross_interpreted``) share: the
tolerances, the comparison, the weighted loss whose gradients are compared, and the script's ``main``.

Triton decides between compiling and interpreting when it is first imported, so each script runs in its own
process and prints one JSON object: case name -> tensor name -> max abs error, max relative error, worst excess
over the tolerance (<= 0 passes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import torch

# (rtol, atol) per input dtype, from docs SSM_BACKENDS.md; fp32 tighter (same fp32 arithmetic on one CPU).
# Gradients: du 2x, ddelta 5x rtol and 10x atol, as mamba_ssm's tests do.
TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}
GRAD_SCALE = {"du": (2, 2), "ddelta": (5, 10)}


def compare(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> dict[str, float]:
    """Max abs error, max relative error and the worst excess of |got - want| over atol + rtol |want|."""
    got, want = got.detach().double(), want.detach().double()
    if want.numel() == 0:
        return {"abs": 0.0, "rel": 0.0, "excess": float(got.shape != want.shape)}
    err = (got - want).abs()
    return {
        "abs": err.max().item(),
        "rel": (err / want.abs().clamp_min(1e-6)).max().item(),
        "excess": (err - atol - rtol * want.abs()).max().item(),
    }


def leaves(inputs: dict[str, torch.Tensor | None], device: str = "cpu") -> dict[str, torch.Tensor | None]:
    """Fresh leaf copies of the given inputs on ``device`` (None stays None)."""
    return {k: None if v is None else v.to(device).clone().requires_grad_() for k, v in inputs.items()}


def weighted_grads(
    outputs: Sequence[torch.Tensor | None], inputs: dict[str, torch.Tensor | None]
) -> dict[str, torch.Tensor]:
    """Gradients ("d" + name, on the CPU) of sum(out * w) over the outputs, each w a fixed random tensor drawn in
    order from one seed, for every input that is not None."""
    g = torch.Generator().manual_seed(1)
    loss = sum(
        (out.float() * torch.randn(out.shape, generator=g).to(out.device)).sum() for out in outputs if out is not None
    )
    names = [k for k, v in inputs.items() if v is not None]
    grads = torch.autograd.grad(loss, [inputs[k] for k in names])
    return {"d" + k: grad.cpu() for k, grad in zip(names, grads)}


def main(cases: Sequence, run_case: Callable[..., dict], names: list[str]) -> None:
    """Run the named cases (all when none is named) on one thread and print their results as JSON."""
    torch.set_num_threads(1)
    chosen = [c for c in cases if not names or c.name in names]
    print(json.dumps({c.name: run_case(c) for c in chosen}))
