"""Which torch device to run on."""

from __future__ import annotations

import torch


def resolve_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU (``local_rank`` under torchrun) when CUDA is available, else the CPU;
    anything else is passed to ``torch.device`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    if requested == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(requested)
