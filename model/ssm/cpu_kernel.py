"""The compiled CPU selective scan: a C++ kernel built at first use, as the operators ``fsr_selective_scan::fwd/bwd``.

``selective_scan_cpu.cpp`` holds the forward and the reverse-time backward (one thread task per
(batch, B/C group, slice of the group's channels), ``at::parallel_for``), delta's bias and softplus
and B, C in the callers' (b, G, N, L) layout included, so nothing is prepared or saved twice in PyTorch. It is compiled with ``torch.utils.cpp_extension.load`` into
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) the first time it is needed, with
OpenMP (the tasks run on torch's thread count) or, where the compiler has no OpenMP, on one thread; the
extension name carries a hash of the source (text and path), the flags and the CPU, so a cached build
is reused only where it was made for, and checkouts sharing the cache do not rebuild each other's.
A library already built under that name is loaded directly, without running ninja (ninja 1.11 and
1.13 read each other's build log as stale and rebuild everything); a build runs the pinned pip ninja
when it is installed, whatever ninja is first on PATH.
``kernel_available()`` is False when there is no compiler or the build fails, and
``FSR_SSM_NO_COMPILE=1`` turns the kernel off. After the build the two C++ operators get their fake
(shape) kernels and the forward its autograd formula (``torch.library``), so ``torch.compile``,
``torch.export`` and ``FakeTensorMode`` see one opaque operator per scan.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from utils.precision import autocast_off

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("selective_scan_cpu.cpp")
CFLAGS = ["-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno"]
# OpenMP makes at::parallel_for run the kernel's tasks on the threads torch is given (without it ATen's
# header turns parallel_for into a serial loop); a compiler without an OpenMP runtime gets one thread.
THREADING = (["-fopenmp"], ["-fopenmp-simd"])

KERNEL_CHUNK = 64  # kChunk in selective_scan_cpu.cpp: the forward saves the state entering each chunk

_lock = threading.Lock()
_state: dict[str, object] = {}


def _cpu_fingerprint() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


def _extension_name(flags: list[str]) -> str:
    digest = hashlib.sha1()
    for part in (
        str(SOURCE.resolve()).encode(),  # the build file names the source path: one build folder per checkout
        SOURCE.read_bytes(),
        " ".join(flags).encode(),
        _cpu_fingerprint().encode(),
        torch.__version__.encode(),
    ):
        digest.update(part)
    return f"fsr_selective_scan_{digest.hexdigest()[:12]}"


@contextlib.contextmanager
def _pinned_ninja() -> Iterator[None]:
    """During a build, the pip-installed ninja (requirements.txt's pin) first on PATH when it is installed."""
    try:
        import ninja  # optional: the pinned ninja when pip installed it
    except ImportError:
        yield
        return
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path
    try:
        yield
    finally:
        os.environ["PATH"] = path


def _load_built(library: Path) -> bool:
    """Load an already-built library of this source hash; False when there is none or it does not load."""
    if not library.is_file():
        return False
    try:
        torch.ops.load_library(str(library))
    except OSError as exc:  # e.g. cut short by a killed build: built again
        logger.warning("cached CPU selective scan %s does not load, rebuilding (%s)", library, exc)
        return False
    return True


def _load_or_build(cpp_extension: Any, flags: list[str]) -> None:
    """Load the cached build for these flags, or build it (into ``$TORCH_EXTENSIONS_DIR``)."""
    name = _extension_name(flags)
    build_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()) / name
    if _load_built(build_dir / f"{name}{getattr(cpp_extension, 'LIB_EXT', '.so')}"):
        return
    logger.info("building the compiled CPU selective scan (once per source version, then cached)")
    build_dir.mkdir(parents=True, exist_ok=True)
    with _pinned_ninja():
        cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=flags,
            extra_ldflags=[f for f in flags if f == "-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )


def _reason(exc: Exception, width: int = 300) -> str:
    """One line for a failed build: the compiler's or linker's first ``error`` line of the build output
    (torch's message starts with the whole ninja command line), else the message's first line; at most
    ``width`` characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    line = next((ln for ln in lines[1:] if re.search(r"\berror\b", ln, re.IGNORECASE)), lines[0])
    return line if len(line) <= width else line[: width - 3] + "..."


def _build() -> object | None:
    if os.environ.get("FSR_SSM_NO_COMPILE", "") not in ("", "0"):
        return None
    try:
        cpp_logger = logging.getLogger("torch.utils.cpp_extension")
        level = cpp_logger.level
        cpp_logger.setLevel(logging.ERROR)  # its import warns "No CUDA runtime is found" on CPU machines
        try:
            from torch.utils import cpp_extension  # imports setuptools (slow); only when the kernel builds
        finally:
            cpp_logger.setLevel(level)
        for threading_flags in THREADING:
            try:
                _load_or_build(cpp_extension, CFLAGS + threading_flags)
                break
            except Exception as exc:  # the OpenMP build failed: the next flags, or the outer fallback
                if threading_flags is THREADING[-1]:
                    raise
                logger.info("CPU selective scan: no OpenMP build (%s); one thread", _reason(exc))
        _register_op_rules()
        return torch.ops.fsr_selective_scan
    except Exception as exc:  # no compiler, no ninja, a failed build: the pure-PyTorch path runs
        logger.warning("compiled CPU selective scan unavailable, using pure PyTorch (%s)", _reason(exc))
        return None


def _ops() -> object | None:
    with _lock:
        if "ops" not in _state:
            _state["ops"] = _build()
        return _state["ops"]


def kernel_available() -> bool:
    """Build (once per process; the build itself is cached on disk) and report whether it worked."""
    return _ops() is not None


def _fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    batch, d, length = u.shape
    n = A.shape[1]
    chunks = -(-length // KERNEL_CHUNK)
    return torch.empty_like(u), u.new_empty(batch, d, n), u.new_empty(batch, d, chunks, n)


def _bwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, dlast, ckpt):
    def like(t):
        return torch.empty_like(t) if t is not None else u.new_empty(0)

    return like(u), like(u), like(A), like(B), like(C), like(D), like(z), like(delta_bias)


def _fwd_setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, delta_softplus = inputs
    ctx.delta_softplus = delta_softplus
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)


def _fwd_backward(ctx, dy, dlast, dckpt):
    """Gradients of every tensor input from the C++ reverse-time backward (softplus, bias and the B, C layout
    included); an unused output's gradient stays None (no zeros are made)."""
    u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
    dy = dy.contiguous() if dy is not None else None
    dlast = dlast.contiguous() if dlast is not None else None
    grads = torch.ops.fsr_selective_scan.bwd(u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, dy, dlast, ckpt)
    du, ddelta, dA, dB, dC, dD, dz, dbias = grads
    return (
        du,
        ddelta,
        dA,
        dB,
        dC,
        dD if D is not None else None,
        dz if z is not None else None,
        dbias if delta_bias is not None else None,
        None,
    )


def _register_op_rules() -> None:
    """Fake kernels for both operators and the forward's autograd formula (once per process)."""
    if _state.get("registered"):
        return
    torch.library.register_fake("fsr_selective_scan::fwd", _fwd_fake)
    torch.library.register_fake("fsr_selective_scan::bwd", _bwd_fake)
    torch.library.register_autograd("fsr_selective_scan::fwd", _fwd_backward, setup_context=_fwd_setup_context)
    _state["registered"] = True


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    """fp32 contiguous (no copy when it already is)."""
    return t.float().contiguous() if t is not None else None


def scan_cpu_kernel(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The backend function once ``kernel_available()``: ``fsr_selective_scan::fwd`` on the fp32 inputs as they come
    (the bias, softplus and B, C layout are the kernel's; no lock, no build check: traceable)."""
    if B.dim() == 3:  # (b, N, L): one group (a view, no copy)
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    with autocast_off("cpu"):
        tensors = [_f32(t) for t in (u, delta, A, B, C, D, z, delta_bias)]
        y, last, _ = torch.ops.fsr_selective_scan.fwd(*tensors, delta_softplus)
    y = y.to(u.dtype)
    return (y, last) if return_last_state else y


def selective_scan_compiled(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``selective_scan_reference``; CPU tensors only, needs ``kernel_available()``."""
    if not kernel_available():
        raise RuntimeError("the compiled CPU selective scan is not available (no compiler or build failed)")
    return scan_cpu_kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
