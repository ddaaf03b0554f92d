"""Multi-GPU and multi-node training through PyTorch's own engine: DistributedDataParallel started by
``torchrun``. We launch nothing ourselves: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK and the
rendezvous; this module only reads them.

    torchrun --nproc_per_node=4 -m attnseg train config.yaml                      # one machine, 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 -m attnseg train config.yaml              # two machines
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_rank() -> int:
    """This process's index on its machine (``torchrun`` sets LOCAL_RANK; 0 without it)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group that ``torchrun`` describes (NCCL for GPUs, gloo for CPUs); a single
    process without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank())


def wrap_model(model: nn.Module, context: DistContext, device: torch.device) -> nn.Module:
    if not context.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_ranks_true(flag: bool, context: DistContext, device: torch.device) -> bool:
    """True only if ``flag`` is true on every rank (a no-op without DDP)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def broadcast_flag(flag: bool, context: DistContext, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (a no-op without DDP)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item() > 0.5)


def barrier(context: DistContext) -> None:
    """Wait for every rank (a no-op without DDP)."""
    if context.enabled:
        dist.barrier()


def sync_buffers(model: nn.Module, context: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each forward, so after the last step of an epoch each rank
    holds statistics updated by its own batch only; syncing at epoch ends makes every rank, and rank
    0's checkpoint, agree.
    """
    if not context.enabled:
        return
    for buffer in unwrap(model).buffers():
        dist.broadcast(buffer, src=0)


def cleanup(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
