"""Unit-test fixtures."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors on a shared 2-core box: one intra-op thread is far faster than two; seeded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
