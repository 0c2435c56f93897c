"""`make gpu-check`: everything that needs a GPU, in one command of at most about 8 minutes.

    .venv/bin/python -m bench.gpu_check [--budget 480]

(1) the CUDA-only tests (compiled Triton kernels against the reference, bitwise-reproducible dB/dC with
``deterministic``, mamba_ssm and causal-conv1d where installed); (2) ``bench.gpu``: every backend's agreement
with the reference, scan times at the models' shapes, and a training burst of HybriMamba and RHMC (img/s,
peak memory, fp32 and bf16). Without CUDA it says so and exits 0. Exit status 1 when a part failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from bench import gpu
from utils.cli import ArgumentParser

CUDA_TESTS = (
    "tests/test_ssm_triton.py::test_compiled_kernels_match_reference_on_cuda",
    "tests/test_ssm_triton.py::test_deterministic_grads_are_bitwise_reproducible_on_cuda",
    "tests/test_ssm.py::test_mamba_ssm_matches_reference",
    "tests/test_mamba1d.py::test_cuda_kernel_matches_torch_path",
)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=480, help="seconds for the whole check (default 480)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to check")
        return 0
    start = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    print(f"== CUDA-only tests ({torch.cuda.get_device_name()}, torch {torch.__version__})", flush=True)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *CUDA_TESTS],
                           env=env, timeout=args.budget // 3)  # fmt: skip

    left = args.budget - (time.monotonic() - start)
    print(f"\n== bench.gpu ({left:.0f} s of the budget left)", flush=True)
    bench = gpu.main(["--batches", "8", "32", "--repeats", "5", "--iterations", "10"])
    print(f"\ngpu-check: tests {'passed' if tests.returncode == 0 else 'FAILED'}, bench.gpu "
          f"{'ok' if bench == 0 else 'FAILED'}, {time.monotonic() - start:.0f} s")  # fmt: skip
    return int(tests.returncode != 0 or bench != 0)


if __name__ == "__main__":
    sys.exit(main())
