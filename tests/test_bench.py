"""bench.scan and bench.gpu run end to end in their tiny modes on CPU, so they cannot break silently."""

from __future__ import annotations

import re

import pytest
import torch

import bench.gpu as gpu
import bench.scan as scan

NUMBER = r"[\d.]+ m?s"


def test_bench_scan_tiny_runs_every_requested_backend(capsys) -> None:
    # in process (each case still runs in its own worker process); a failed case exits 1 (SystemExit)
    scan.main(["--tiny", "--device", "cpu", "--backends", "reference", "torch-pure"])
    out = capsys.readouterr().out
    for backend in ("reference", "torch-pure"):
        assert re.search(rf"^{backend}\s+4\s+64\s+{NUMBER}\s+[\d.]+x\s+{NUMBER}", out, re.M), out
    assert "skipped mamba_ssm: ssm.backend=mamba_ssm needs CUDA" in out


def test_bench_gpu_without_cuda_says_so_and_exits_0(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main([]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out


def test_bench_gpu_tiny_report_on_cpu(capsys, single_thread) -> None:
    assert gpu.main(["--device", "cpu", "--tiny"]) == 0
    out = capsys.readouterr().out
    assert "skipped mamba_ssm: ssm.backend=mamba_ssm needs CUDA" in out
    for dtype in ("fp32", "fp16", "bf16"):
        assert re.search(rf"^torch\s+{dtype}\s+ok\s+y [\d.e+-]+/.*dA .*ddelta_bias", out, re.M), out
    for model in ("hybrimamba", "rhmc"):
        assert re.search(rf"^{model}: scans per forward .*\(\d+, 256, \d+\)", out, re.M), out  # L = 16 * 16
        for dtype in ("fp32", "bf16"):
            assert re.search(rf"^{model}\s+torch\s+{dtype}\s+1\s+\d+\s+256\s+\d+\s+{NUMBER}\s+{NUMBER}", out, re.M)
        for precision in ("fp32", "bf16"):
            assert re.search(rf"^{model}\s+{precision}\s+1\s+[\d.]+\s+[\d.]+\s+-$", out, re.M), out


def test_bench_gpu_reports_a_failing_backend_and_exits_1(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("kernel launch failed")

    def wrong(u, *args, **kwargs):
        y, last = gpu.selective_scan_reference(u, *args, **kwargs)
        return y + 1, last

    monkeypatch.setattr(gpu, "available_backends", lambda device: ({"broken": broken, "wrong": wrong}, {}))
    assert gpu.main(["--device", "cpu", "--tiny", "--sections", "agreement"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^broken\s+fp32\s+RuntimeError: kernel launch failed", out, re.M), out
    assert re.search(r"^wrong\s+bf16\s+FAIL\s+y 1\.0e\+00", out, re.M), out
