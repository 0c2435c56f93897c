"""CPU stand-ins for the ``selective_scan_cuda`` and ``causal_conv1d_cuda`` extensions, for contract tests.

Each function takes the argument list of the real extension (mamba_ssm 2.x ``selective_scan.cpp``,
causal-conv1d 1.7 ``causal_conv1d.cpp``), repeats the checks its TORCH_CHECKs make (``is_cuda``
becomes "on u's / x's device"), raises ``KernelAssert`` where the kernel would assert, and computes
with the project's reference (the backward by autograd through it). ``real_selective_scan_fn`` and
``real_causal_conv1d_fn`` plug them under the packages' own Python wrappers when those import;
otherwise ``StandinSelectiveScanFn`` / ``StandinCausalConv1dFn`` call them the way those wrappers do
(copy where the last-dim stride is not 1, 3-D B/C unsqueezed, last_state = x[:, :, -1, 1::2], the
backward ignores d(last_state)).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from model.mamba1d import causal_conv1d_torch
from model.ssm.reference import selective_scan_reference

INPUT_TYPES = (torch.float32, torch.float16, torch.bfloat16)
CHUNK = 2048  # the kernel's chunk of L; x holds one (decay product, state) pair per chunk and state
calls: dict[str, int] = {}


class KernelAssert(RuntimeError):
    """A TORCH_CHECK of the CUDA extension failed."""


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise KernelAssert(f"Expected {what} to be true, but got false")


def _unit_last_stride(t: torch.Tensor) -> bool:
    return t.stride(-1) == 1 or t.size(-1) == 1


def _shape(t: torch.Tensor, *sizes: int, name: str) -> None:
    _check(tuple(t.shape) == sizes, f"{name} must have shape {sizes}")


def _check_scan(u, delta, A, B, C, D, z, delta_bias):
    """The checks shared by selective_scan_fwd and selective_scan_bwd; returns (batch, dim, L, N, G)."""
    itype = u.dtype
    _check(itype in INPUT_TYPES, "input_type == Float || Half || BFloat16")
    _check(A.dtype == torch.float32, "weight_type == Float")  # complex A is not modelled
    _check(B.dim() >= 3 and C.dim() >= 3, "variable B and C (the constant-B path is not modelled)")
    for name, t in (("delta", delta), ("B", B), ("C", C)):
        _check(t.dtype == itype, f"{name}.scalar_type() == input_type")
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C)):
        _check(t.device == u.device, f"{name}.is_cuda()")
    _check(_unit_last_stride(u), "u.stride(-1) == 1 || u.size(-1) == 1")
    _check(_unit_last_stride(delta), "delta.stride(-1) == 1 || delta.size(-1) == 1")
    batch, dim, length = u.shape
    dstate, groups = A.size(1), B.size(1)
    _check(dstate <= 256, "dstate <= 256")
    _shape(u, batch, dim, length, name="u")
    _shape(delta, batch, dim, length, name="delta")
    _shape(A, dim, dstate, name="A")
    for name, t in (("B", B), ("C", C)):
        _shape(t, batch, groups, dstate, length, name=name)
        _check(_unit_last_stride(t), f"{name}.stride(-1) == 1 || {name}.size(-1) == 1")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _check(t.dtype == torch.float32, f"{name}.scalar_type() == Float")
            _check(t.device == u.device, f"{name}.is_cuda()")
            _check(_unit_last_stride(t), f"{name}.stride(-1) == 1 || {name}.size(-1) == 1")
            _shape(t, dim, name=name)
    if z is not None:
        _check(z.dtype == itype, "z.scalar_type() == input_type")
        _check(z.device == u.device, "z.is_cuda()")
        _check(_unit_last_stride(z), "z.stride(-1) == 1 || z.size(-1) == 1")
        _shape(z, batch, dim, length, name="z")
    # Not a TORCH_CHECK in the kernel, which reads out of bounds instead: fail loudly here.
    _check(dim % groups == 0, "dim % n_groups == 0")
    return batch, dim, length, dstate


def _softplus_delta(delta, delta_bias, delta_softplus):
    x = delta.float() if delta_bias is None else delta.float() + delta_bias[:, None]
    return F.softplus(x) if delta_softplus else x


def selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens=None):
    """-> [out, x, out_z if z]: out = y before the z gate, x (batch, dim, n_chunks, 2N) float32."""
    calls["selective_scan_fwd"] = calls.get("selective_scan_fwd", 0) + 1
    _check(cu_seqlens is None, "cu_seqlens is None (varlen is not modelled)")
    batch, dim, length, dstate = _check_scan(u, delta, A, B, C, D, z, delta_bias)
    with torch.no_grad():
        y = selective_scan_reference(u.float(), delta, A, B, C, D, None, delta_bias, delta_softplus)  # float32
        out = y.to(delta.dtype)
        n_chunks = -(-length // CHUNK)
        x = torch.empty(batch, dim, n_chunks, 2 * dstate, dtype=torch.float32, device=u.device)
        cum = _softplus_delta(delta, delta_bias, delta_softplus).cumsum(-1)
        for c in range(n_chunks):
            end = min(length, (c + 1) * CHUNK)
            _, last = selective_scan_reference(
                u[..., :end], delta[..., :end], A, B[..., :end], C[..., :end], None, None, delta_bias,
                delta_softplus, return_last_state=True,
            )  # fmt: skip
            x[:, :, c, 0::2] = torch.exp(cum[..., end - 1, None] * A)
            x[:, :, c, 1::2] = last
    result = [out, x]
    if z is not None:
        result.append((y * F.silu(z.float())).to(z.dtype))
    return result


def selective_scan_bwd(
    u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z, cu_seqlens=None
):
    """-> [du, ddelta, dA, dB, dC, dD, ddelta_bias, dz if z, out_z if recompute_out_z]."""
    calls["selective_scan_bwd"] = calls.get("selective_scan_bwd", 0) + 1
    _check(cu_seqlens is None, "cu_seqlens is None (varlen is not modelled)")
    batch, dim, length, dstate = _check_scan(u, delta, A, B, C, D, z, delta_bias)
    _check(dout.dtype == u.dtype, "dout.scalar_type() == input_type")
    _check(dout.device == u.device, "dout.is_cuda()")
    _check(_unit_last_stride(dout), "dout.stride(-1) == 1 || dout.size(-1) == 1")
    _shape(dout, batch, dim, length, name="dout")
    if z is not None:
        _check(out is not None, "out_.has_value()")
        _check(out.dtype == u.dtype and _unit_last_stride(out), "out.scalar_type() == input_type, stride(-1) == 1")
        _shape(out, batch, dim, length, name="out")
    n_chunks = -(-length // CHUNK)
    _check(n_chunks == 1 or x is not None, "x_.has_value()")
    if x is not None:
        _check(x.dtype == torch.float32 and x.is_contiguous(), "x.scalar_type() == weight_type, x.is_contiguous()")
        _shape(x, batch, dim, n_chunks, 2 * dstate, name="x")
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]

    def reference_grads():
        with torch.enable_grad():
            y = selective_scan_reference(*leaves, delta_softplus)
            wanted = [t for t in leaves if t is not None]
            return y.detach(), torch.autograd.grad(y, wanted, dout, allow_unused=True)

    # A fresh thread: the project calls the kernel from a torch.library operator, below the autograd dispatch
    # key, where this thread's autograd records nothing.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        y, grads = pool.submit(reference_grads).result()
    grads = iter(grads)
    du, ddelta, dA, dB, dC, dD, dz_, ddelta_bias = (
        (next(grads) if t is not None else None) for t in leaves
    )  # fmt: skip
    result = [du, ddelta, dA, dB, dC, dD, ddelta_bias]
    if z is not None:
        result.append(dz.copy_(dz_) if dz is not None else dz_)
    if recompute_out_z:
        result.append(y)
    return result


def _check_conv(x, weight, bias):
    _check(x.dtype in INPUT_TYPES, "input_type == Float || Half || BFloat16")
    _check(weight.dtype in INPUT_TYPES, "weight_type == Float || Half || BFloat16")
    _check(weight.device == x.device, "weight.is_cuda()")
    batch, dim, length = x.shape
    width = weight.size(-1)
    _shape(weight, dim, width, name="weight")
    _check(x.stride(2) == 1 or x.stride(1) == 1, "x.stride(2) == 1 || x.stride(1) == 1")
    channel_last = x.stride(1) == 1 and x.stride(2) > 1
    if channel_last:
        _check(dim % 8 == 0, "dim % 8 == 0 (channel last)")
        _check(x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0, "x.stride(2) % 8 == 0 && x.stride(0) % 8 == 0")
    _check(2 <= width <= 4, "width >= 2 && width <= 4")
    if bias is not None:
        _check(bias.dtype == weight.dtype, "bias.scalar_type() == weight_type")
        _check(bias.device == x.device and bias.stride(-1) == 1, "bias.is_cuda(), bias.stride(-1) == 1")
        _shape(bias, dim, name="bias")
    return channel_last


def _conv(x, weight, bias, silu):
    _check(silu, "silu_activation (the stand-in models the SiLU path only, the one the project uses)")
    return causal_conv1d_torch(x.float(), weight.float(), bias.float() if bias is not None else None)


def causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, out, final_states_out, silu_activation):
    """Writes SiLU(causal conv) into ``out`` (x's dtype); seq_idx / states are not modelled."""
    calls["causal_conv1d_fwd"] = calls.get("causal_conv1d_fwd", 0) + 1
    _check_conv(x, weight, bias)
    _check(seq_idx is None and initial_states is None and final_states_out is None, "no seq_idx / states")
    out.copy_(_conv(x, weight, bias, silu_activation))


def causal_conv1d_bwd(
    x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, dweight, dbias, dinitial_states, silu_activation
):
    """Writes dx (x's dtype) and adds dweight, dbias (float32 buffers) for the cotangent ``dout``."""
    calls["causal_conv1d_bwd"] = calls.get("causal_conv1d_bwd", 0) + 1
    channel_last = _check_conv(x, weight, bias)
    _check(dout.device == x.device, "dout.is_cuda()")
    _check((bias is None) == (dbias is None), "bias_.has_value() == dbias_.has_value()")
    _shape(dout, *x.shape, name="dout")
    _check(dx.dtype == x.dtype, "dx.scalar_type() == input_type")
    _shape(dx, *x.shape, name="dx")
    _check(dx.stride(1 if channel_last else 2) == 1, "dx.stride(2) == 1 (dx.stride(1) channel last)")
    _check(seq_idx is None and initial_states is None and dfinal_states is None, "no seq_idx / states")
    _check(silu_activation, "silu_activation (the stand-in models the SiLU path only, the one the project uses)")
    # aten's convolution_backward directly: the real wrapper runs this under torch.library.custom_op,
    # below the autograd dispatch key, where autograd records nothing.
    width = weight.shape[1]
    xpad = F.pad(x.float(), (width - 1, 0))
    w = weight.float().unsqueeze(1)
    pre = F.conv1d(xpad, w, bias.float() if bias is not None else None, groups=x.shape[1])
    sig = torch.sigmoid(pre)
    g = dout.float() * sig * (1 + pre * (1 - sig))  # SiLU'
    dx.copy_(torch.nn.grad.conv1d_input(xpad.shape, w, g, groups=x.shape[1])[..., width - 1 :])
    dweight.add_(torch.nn.grad.conv1d_weight(xpad, w.shape, g, groups=x.shape[1])[:, 0])
    if dbias is not None:
        dbias.add_(g.sum((0, 2)))


selective_scan_cuda = types.ModuleType("selective_scan_cuda", "CPU stand-in for mamba_ssm's extension")
selective_scan_cuda.fwd = selective_scan_fwd
selective_scan_cuda.bwd = selective_scan_bwd
causal_conv1d_cuda = types.ModuleType("causal_conv1d_cuda", "CPU stand-in for causal-conv1d's extension")
causal_conv1d_cuda.causal_conv1d_fwd = causal_conv1d_fwd
causal_conv1d_cuda.causal_conv1d_bwd = causal_conv1d_bwd


class StandinSelectiveScanFn(torch.autograd.Function):
    """Calls the stand-in as mamba_ssm's ``SelectiveScanFn`` calls the extension (used when mamba_ssm is absent)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        u, delta, B, C = (t if _unit_last_stride(t) else t.contiguous() for t in (u, delta, B, C))
        z = z if z is None or _unit_last_stride(z) else z.contiguous()
        D = D.contiguous() if D is not None else None
        ctx.squeeze = B.dim() == 3
        if ctx.squeeze:
            B, C = B.unsqueeze(1), C.unsqueeze(1)
        out, x, *rest = selective_scan_cuda.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        ctx.delta_softplus, ctx.has_z = delta_softplus, z is not None
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out)
        y = rest[0] if z is not None else out
        return (y, x[:, :, -1, 1::2]) if return_last_state else y

    @staticmethod
    def backward(ctx, dout, *unused_dlast):
        u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        dout = dout if _unit_last_stride(dout) else dout.contiguous()
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = selective_scan_cuda.bwd(
            u, delta, A, B, C, D, z, delta_bias, dout, x, out if ctx.has_z else None, None, ctx.delta_softplus, False
        )
        if ctx.squeeze:
            dB, dC = dB.squeeze(1), dC.squeeze(1)
        return du, ddelta, dA, dB, dC, dD, rest[0] if ctx.has_z else None, ddelta_bias, None, None


def standin_selective_scan_fn(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    return StandinSelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


class StandinCausalConv1dFn(torch.autograd.Function):
    """Calls the stand-in as causal_conv1d's ``CausalConv1dFn`` calls the extension (when the package is absent)."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        if x.stride(2) != 1 and x.stride(1) != 1:
            x = x.contiguous()
        bias = bias.contiguous() if bias is not None else None
        out = torch.empty_like(x)
        causal_conv1d_cuda.causal_conv1d_fwd(x, weight, bias, None, None, out, None, activation in ("silu", "swish"))
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = activation in ("silu", "swish")
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        if dout.stride(2) != 1 and dout.stride(1) != 1:
            dout = dout.contiguous()
        dx = torch.empty_like(x)
        dweight = torch.zeros_like(weight, dtype=torch.float32)
        dbias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None else None
        causal_conv1d_cuda.causal_conv1d_bwd(
            x, weight, bias, dout, None, None, None, dx, dweight, dbias, None, ctx.silu
        )
        return dx, dweight.to(weight.dtype), dbias.to(bias.dtype) if bias is not None else None, None


def standin_causal_conv1d_fn(x, weight, bias=None, activation=None):
    return StandinCausalConv1dFn.apply(x, weight, bias, activation)


def _plug(module_name: str, extension: str, standin: types.ModuleType, monkeypatch: pytest.MonkeyPatch):
    """Import ``module_name`` (the stand-in in sys.modules if the extension is missing) and point it at the stand-in."""
    try:
        importlib.import_module(extension)
    except Exception:
        monkeypatch.setitem(sys.modules, extension, standin)
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return None
    monkeypatch.setattr(module, extension, standin)
    return module


def real_selective_scan_fn(monkeypatch: pytest.MonkeyPatch):
    """(mamba_ssm's selective_scan_fn over the stand-in, "mamba_ssm wrapper") or (the local glue, "glue")."""
    module = _plug("mamba_ssm.ops.selective_scan_interface", "selective_scan_cuda", selective_scan_cuda, monkeypatch)
    if module is None:
        return standin_selective_scan_fn, "glue"
    return module.selective_scan_fn, "mamba_ssm wrapper"


def real_causal_conv1d_fn(monkeypatch: pytest.MonkeyPatch):
    """(causal_conv1d_fn over the stand-in, "causal_conv1d wrapper") or (the local glue, "glue")."""
    module = _plug("causal_conv1d.cpp_functions", "causal_conv1d_cuda", causal_conv1d_cuda, monkeypatch)
    if module is None:
        return standin_causal_conv1d_fn, "glue"
    from causal_conv1d import causal_conv1d_fn

    return causal_conv1d_fn, "causal_conv1d wrapper"
