"""Which torch device to run on."""

from __future__ import annotations

import torch

from attnseg.errors import ConfigError


def resolve_device(requested: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU (``local_rank`` under torchrun) when CUDA is available, else the CPU;
    ``cuda`` without an index: this process's GPU too (one GPU per process on a machine); anything else
    is passed to ``torch.device`` (``cpu``, ``cuda:1``, ``mps``).

    Raises:
        ConfigError: ``cuda`` without a GPU, or the process's GPU does not exist (more processes on a
            machine than GPUs).
    """
    if isinstance(requested, torch.device):
        return requested
    if requested == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if requested in ("auto", "cuda"):
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError("device 'cuda' asked for, but PyTorch sees no CUDA GPU here; pass --device cpu")
        if local_rank >= count:
            raise ConfigError(
                f"process {local_rank} of this machine needs GPU {local_rank}, but there are {count}: start at most "
                f"{count} process(es) per machine (torchrun --nproc_per_node={count}), or pass --device cpu"
            )
        return torch.device("cuda", local_rank)
    return torch.device(requested)
