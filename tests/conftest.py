"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of tiny networks: on a loaded 2-core machine OpenMP spin-waiting
    makes small tensor ops up to 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
