"""Shared test set-up: deterministic seeds and small CPU workloads."""

import pytest
import torch

# Tests use small tensors, where one thread is as fast as two and immune to oversubscription when
# other processes share the cores (two OpenMP threads on a busy 2-core machine can be 50x slower).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
