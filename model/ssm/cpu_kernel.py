"""The compiled CPU selective scan: a C++ kernel built at first use, wrapped in an autograd.Function.

``selective_scan_cpu.cpp`` holds the forward and the reverse-time backward (one thread task per
(batch, channel), ``at::parallel_for``). It is compiled with ``torch.utils.cpp_extension.load`` into
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) the first time it is needed; the
extension name carries a hash of the source (text and path), the flags and the CPU, so a cached build
is reused only where it was made for, and checkouts sharing the cache do not rebuild each other's.
A library already built under that name is loaded directly, without running ninja (ninja 1.11 and
1.13 read each other's build log as stale and rebuild everything); a build runs the pinned pip ninja
when it is installed, whatever ninja is first on PATH.
``kernel_available()`` is False when there is no compiler or the build fails, and
``FSR_SSM_NO_COMPILE=1`` turns the kernel off.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("selective_scan_cpu.cpp")
CFLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-trapping-math", "-fno-math-errno"]

_lock = threading.Lock()
_state: dict[str, object] = {}


def _cpu_fingerprint() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


def _extension_name() -> str:
    digest = hashlib.sha1()
    for part in (
        str(SOURCE.resolve()).encode(),  # the build file names the source path: one build folder per checkout
        SOURCE.read_bytes(),
        " ".join(CFLAGS).encode(),
        _cpu_fingerprint().encode(),
        torch.__version__.encode(),
    ):
        digest.update(part)
    return f"fsr_selective_scan_{digest.hexdigest()[:12]}"


@contextlib.contextmanager
def _pinned_ninja() -> Iterator[None]:
    """During a build, the pip-installed ninja (requirements.txt's pin) first on PATH when it is installed."""
    try:
        import ninja
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


def _build() -> object | None:
    if os.environ.get("FSR_SSM_NO_COMPILE", "") not in ("", "0"):
        return None
    try:
        cpp_logger = logging.getLogger("torch.utils.cpp_extension")
        level = cpp_logger.level
        cpp_logger.setLevel(logging.ERROR)  # its import warns "No CUDA runtime is found" on CPU machines
        try:
            from torch.utils import cpp_extension
        finally:
            cpp_logger.setLevel(level)
        name = _extension_name()
        build_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()) / name
        if _load_built(build_dir / f"{name}{getattr(cpp_extension, 'LIB_EXT', '.so')}"):
            return torch.ops.fsr_selective_scan
        logger.info("building the compiled CPU selective scan (once per source version, then cached)")
        build_dir.mkdir(parents=True, exist_ok=True)
        with _pinned_ninja():
            cpp_extension.load(
                name=name,
                sources=[str(SOURCE)],
                extra_cflags=CFLAGS,
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=False,
            )
        return torch.ops.fsr_selective_scan
    except Exception as exc:  # no compiler, no ninja, a failed build: the pure-PyTorch path runs
        logger.warning("compiled CPU selective scan unavailable, using pure PyTorch (%s)", str(exc).splitlines()[0])
        return None


def _ops() -> object | None:
    with _lock:
        if "ops" not in _state:
            _state["ops"] = _build()
        return _state["ops"]


def kernel_available() -> bool:
    """Build (once per process; the build itself is cached on disk) and report whether it worked."""
    return _ops() is not None


def _slices(batch: int, groups: int, per_group: int) -> int:
    """Split each group's channels so the backward has about two tasks per thread."""
    tasks = max(1, batch * groups)  # batch 0: nothing to split
    want = -(-2 * torch.get_num_threads() // tasks)
    return max(1, min(per_group, want))


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """fp32 contiguous kernel inputs; B, C time-major (b, G, L, N); returns the pre-softplus delta too."""
    x = delta.float()
    if delta_bias is not None:
        x = x + delta_bias.float()[None, :, None]
    dt = F.softplus(x) if delta_softplus else x
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    Bt = B.float().transpose(-1, -2).contiguous()
    Ct = C.float().transpose(-1, -2).contiguous()
    Df = D.float().contiguous() if D is not None else None
    zf = z.float().contiguous() if z is not None else None
    return u.float().contiguous(), x, dt.contiguous(), A.float().contiguous(), Bt, Ct, Df, zf


class CompiledSelectiveScan(torch.autograd.Function):
    """Forward and backward both run the C++ kernel; saves the fp32 inputs and the chunk entry states."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool):
        with torch.autocast("cpu", enabled=False):
            uf, x, dt, Af, Bt, Ct, Df, zf = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
            y, last, ckpt = _ops().fwd(uf, dt, Af, Bt, Ct, Df, zf)
        ctx.delta_softplus = delta_softplus
        ctx.dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
        ctx.grouped = B.dim() == 4
        ctx.save_for_backward(uf, x if delta_softplus else None, dt, Af, Bt, Ct, Df, zf, ckpt)
        ctx.set_materialize_grads(False)
        return y.to(u.dtype), last

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dlast):
        uf, x, dt, Af, Bt, Ct, Df, zf, ckpt = ctx.saved_tensors
        with torch.autocast("cpu", enabled=False):
            dy = torch.zeros_like(uf) if dy is None else dy.float().contiguous()
            dlast = dlast.float().contiguous() if dlast is not None else None
            batch, groups = Bt.shape[:2]
            slices = _slices(batch, groups, uf.shape[1] // groups)
            du, ddt, dA, dD, dz, dB, dC = _ops().bwd(uf, dt, Af, Bt, Ct, Df, zf, dy, dlast, ckpt, slices)
            if ctx.delta_softplus:
                # softplus'(x) = sigmoid(x), which is 1.0 in float32 past the threshold 20 as well
                ddt.mul_(torch.sigmoid(x))
            dB = (dB.sum(0) if dB.shape[0] > 1 else dB[0]).transpose(-1, -2)
            dC = (dC.sum(0) if dC.shape[0] > 1 else dC[0]).transpose(-1, -2)
            if not ctx.grouped:
                dB, dC = dB.squeeze(1), dC.squeeze(1)
        t_u, t_delta, t_A, t_B, t_C, t_D, t_z, t_bias = ctx.dtypes
        return (
            du.to(t_u),
            ddt.to(t_delta),
            dA.sum(0).to(t_A),
            dB.to(t_B),
            dC.to(t_C),
            dD.sum(0).to(t_D) if t_D is not None else None,
            dz.to(t_z) if t_z is not None else None,
            ddt.sum((0, 2)).to(t_bias) if t_bias is not None else None,
            None,
        )


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
    y, last = CompiledSelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (y, last) if return_last_state else y
