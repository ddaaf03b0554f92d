"""Shared test set-up: deterministic seeds and small CPU workloads."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
