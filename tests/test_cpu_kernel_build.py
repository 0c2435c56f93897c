"""The CPU scan kernel's build fallbacks, with no C++ build: ``torch.utils.cpp_extension.load`` replaced.

The OpenMP build failing must retry once SIMD-only (its own flags, extension name and build folder) and say so in
one line; neither building must leave the pure-PyTorch scan with one warning line naming the compiler's error.
"""

from __future__ import annotations

import logging

import pytest
import torch

import model.ssm.cpu_kernel as cpu_kernel
from model.ssm import resolve_backend
from model.ssm.chunked_scan import selective_scan_chunked


def ninja_failure(name: str, flag: str) -> RuntimeError:
    """What ``cpp_extension.load`` raises when the compiler rejects ``flag`` (its message's layout, shortened)."""
    command = f"c++ -MMD -MF selective_scan_cpu.o.d -DTORCH_EXTENSION_NAME={name} -fPIC -std=c++20 {flag} -c x.cpp"
    return RuntimeError(
        f"Error building extension '{name}': [1/2] {command}\nFAILED: selective_scan_cpu.o\n{command}\n"
        f"c++: error: unrecognized command-line option '{flag}'\nninja: build stopped: subcommand failed.\n"
    )


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """``cpp_extension.load`` recording its keywords and raising ``failures[i]`` on call i (when not None); an
    empty extensions folder (no cached build); the operators' registration recorded, not made."""
    calls: list[dict] = []
    failures: list[Exception | None] = []
    registered: list[bool] = []

    def load(**kwargs):
        calls.append(kwargs)
        failure = failures[len(calls) - 1] if len(calls) <= len(failures) else None
        if failure is not None:
            raise failure

    monkeypatch.setattr("torch.utils.cpp_extension.load", load)
    monkeypatch.setattr(cpu_kernel, "_register_op_rules", lambda: registered.append(True))
    monkeypatch.setattr(cpu_kernel, "_state", {})  # this process's build result, as if never built
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("FSR_SSM_NO_COMPILE", raising=False)
    return calls, failures, registered


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == cpu_kernel.__name__ and r.levelno == level]


def test_openmp_build_failure_retries_simd_only_and_says_so_in_one_line(fake_build, caplog, tmp_path) -> None:
    calls, failures, registered = fake_build
    failures.append(ninja_failure("fsr_selective_scan_x", "-fopenmp"))
    with caplog.at_level(logging.INFO, logger=cpu_kernel.__name__):
        assert cpu_kernel.kernel_available()
    assert [c["extra_cflags"] for c in calls] == [
        cpu_kernel.CFLAGS + ["-fopenmp"],
        cpu_kernel.CFLAGS + ["-fopenmp-simd"],
    ]
    assert [c["extra_ldflags"] for c in calls] == [["-fopenmp"], []]  # the SIMD-only build links no OpenMP runtime
    names = [c["name"] for c in calls]
    assert names[0] != names[1]  # cached builds of the two flag sets never stand in for each other
    assert [c["build_directory"] for c in calls] == [str(tmp_path / name) for name in names]
    assert registered == [True]  # fake kernels and autograd registered once, after the build that worked
    fallback = [m for m in _records(caplog, logging.INFO) if "OpenMP" in m]
    assert fallback == [
        "CPU selective scan: no OpenMP build (c++: error: unrecognized command-line option '-fopenmp'); one thread"
    ]
    assert _records(caplog, logging.WARNING) == []
    assert cpu_kernel.kernel_available() and len(calls) == 2  # decided once per process


def test_neither_build_leaves_pure_pytorch_with_one_warning_line(fake_build, caplog) -> None:
    calls, failures, registered = fake_build
    no_ninja = RuntimeError("Ninja is required to load C++ extensions (pip install ninja)")
    failures.extend([ninja_failure("fsr_selective_scan_x", "-fopenmp"), no_ninja])
    with caplog.at_level(logging.INFO, logger=cpu_kernel.__name__):
        assert not cpu_kernel.kernel_available()
        scan = resolve_backend("torch", "cpu")
    assert len(calls) == 2 and registered == []
    assert _records(caplog, logging.WARNING) == [
        "compiled CPU selective scan unavailable, using pure PyTorch "
        "(Ninja is required to load C++ extensions (pip install ninja))"
    ]
    assert (scan.name, scan.fn) == ("torch", selective_scan_chunked)
    with pytest.raises(RuntimeError, match="compiled CPU selective scan is not available"):
        cpu_kernel.selective_scan_compiled(
            *(torch.zeros(1, 1, 2),) * 2, torch.zeros(1, 1), *(torch.zeros(1, 1, 2),) * 2
        )


def test_build_failure_reason_is_one_bounded_line() -> None:
    reason = cpu_kernel._reason(ninja_failure("fsr_selective_scan_x", "-fopenmp"))
    assert reason == "c++: error: unrecognized command-line option '-fopenmp'"
    long = RuntimeError("Error building extension 'x': " + "c++ -O3 " * 200 + "\nFAILED: x.o")  # no error line
    assert cpu_kernel._reason(long).startswith("Error building extension 'x': c++ -O3")
    assert len(cpu_kernel._reason(long)) == 300 and cpu_kernel._reason(long).endswith("...")
