"""Multi-process work (training, prediction) through PyTorch's own engine, started by ``torchrun``.

We launch nothing ourselves: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK and the rendezvous; this
module only reads them, joins the process group and leaves it cleanly.

    torchrun --nproc_per_node=4 -m attnseg train config.yaml                      # one machine, 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 -m attnseg train config.yaml              # two machines
    torchrun --nproc_per_node=4 -m attnseg predict -m MODEL -i SCANS -o OUT       # cases shared out

Two rules keep a multi-process run from hanging:

* **Every collective has a timeout** (``init_process_group(timeout=...)``; ``training.dist_timeout``,
  ``attnseg predict --dist-timeout``).
  A rank that waits longer for the others raises :class:`DistributedError` naming itself and the
  operation, instead of waiting for ever; ``torchrun`` then stops the other ranks.
* **The process group outlives everything that holds it.** DistributedDataParallel keeps a reference to
  the group; destroying the group first and dropping the wrapper afterwards makes ``~ProcessGroupGloo``
  join threads that never finish. :func:`process_group` therefore runs the caller's work, lets the
  caller drop its objects, collects garbage, and only then destroys the group.

Each rank prints every thread's Python stack on ``SIGUSR1`` (``kill -USR1 PID``), to see where a slow
rank is. With ``ATTNSEG_HEARTBEAT=PATH`` (:mod:`attnseg.hooks`) each rank also touches ``PATH`` on joining
and leaving the group and around every collective, so a watcher can tell a slow rank from a stuck one.

Work that is shared out item by item (prediction) uses a :class:`SharedCounter` in the process group's
key-value store: each rank claims the next item when it is free, so a fast GPU simply does more.
"""

from __future__ import annotations

import contextlib
import datetime
import faulthandler
import gc
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from attnseg import hooks
from attnseg.errors import AttnsegError

# Seconds a collective may wait for the other ranks (PyTorch's own default is 10 min for NCCL, 30 for gloo).
DEFAULT_TIMEOUT_S = 600.0


class DistributedError(AttnsegError):
    """A collective timed out or failed: another rank died, stalled, or cannot be reached."""


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    timeout_option: str = "training.dist_timeout"  # what a user raises when a rank legitimately needs longer

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_rank() -> int:
    """This process's index on its machine (``torchrun`` sets LOCAL_RANK; 0 without it)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def global_rank() -> int:
    """This process's index among all of ``torchrun``'s processes (RANK; 0 without it), known before the
    process group is joined: what a rank may do before then (take a lock) is decided from it."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes ``torchrun`` started (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(
    device: torch.device,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    backend: str | None = None,
    timeout_option: str = "training.dist_timeout",
) -> DistContext:
    """Join the process group that ``torchrun`` describes (by default NCCL for GPUs, gloo for CPUs; work
    that only exchanges Python objects asks for gloo everywhere); a single process without it. Prefer
    :func:`process_group`, which also leaves the group safely. ``timeout_option`` names the setting
    that raises ``timeout_s``, for the error message of a collective that timed out."""
    if world_size() <= 1:
        return DistContext(timeout_s=timeout_s, timeout_option=timeout_option)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend or ("nccl" if device.type == "cuda" else "gloo"),
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank(), timeout_s, timeout_option)


def shutdown(context: DistContext) -> None:
    """Leave the process group. Call it only when nothing holds the group any more (no live
    DistributedDataParallel): the garbage collection here frees what cycles still keep alive."""
    if context.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(
    device: torch.device,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    backend: str | None = None,
    timeout_option: str = "training.dist_timeout",
) -> Iterator[DistContext]:
    """``with process_group(device) as context:`` run the work of one rank, then leave the group
    (arguments: see :func:`init_distributed`).

    Keep every object that holds the group (the DDP wrapper, a Trainer) local to a function called
    inside the block, so that it is gone by the time the block ends.
    """
    hooks.beat()
    context = init_distributed(device, timeout_s, backend, timeout_option)
    hooks.beat()
    try:
        yield context
    finally:
        hooks.beat()
        shutdown(context)
        hooks.beat()  # left the group: a hang in ``destroy_process_group`` stops the heartbeat before this


def wrap_model(model: nn.Module, context: DistContext, device: torch.device) -> nn.Module:
    if not context.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# What gloo and NCCL say when the other side is gone or late (not always as a DistError).
_COMMUNICATION_FAILURE = re.compile(r"timed out|timeout|pair closure|connection (closed|reset)|by peer|nccl", re.I)


def is_communication_failure(error: BaseException) -> bool:
    return isinstance(error, dist.DistError) or bool(_COMMUNICATION_FAILURE.search(str(error)))


@contextlib.contextmanager
def collective(context: DistContext, what: str, *, computing: bool = False) -> Iterator[None]:
    """Turn a failed or timed-out collective into one line that says which rank, doing what.

    ``computing``: the block also computes (a DDP training step), so only errors that look like a
    failure to communicate are converted; a genuine error of the computation passes unchanged.
    """
    hooks.beat()
    try:
        yield
        hooks.beat()
    except RuntimeError as error:
        if not context.enabled or (computing and not is_communication_failure(error)):
            raise
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise DistributedError(
            f"rank {context.rank} of {context.world_size}: {what} failed after waiting at most "
            f"{context.timeout_s:g} s for the other ranks ({reason}); another rank has probably died or stalled "
            f"(its own log says why; raise {context.timeout_option} if a rank legitimately needs longer)"
        ) from error


def all_ranks_true(flag: bool, context: DistContext, device: torch.device, what: str = "all_reduce") -> bool:
    """True only if ``flag`` is true on every rank (a no-op without DDP)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    with collective(context, what):
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def broadcast_flag(flag: bool, context: DistContext, device: torch.device, what: str = "broadcast") -> bool:
    """Rank 0's ``flag`` on every rank (a no-op without DDP)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    with collective(context, what):
        dist.broadcast(value, src=0)
    return bool(value.item() > 0.5)


def broadcast_number(value: float, context: DistContext, device: torch.device, what: str = "broadcast") -> float:
    """Rank 0's ``value`` on every rank (a no-op without DDP): decisions one rank makes for all."""
    if not context.enabled:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    with collective(context, what):
        dist.broadcast(tensor, src=0)
    return float(tensor.item())


def barrier(context: DistContext, what: str = "barrier") -> None:
    """Wait for every rank (a no-op without DDP)."""
    if context.enabled:
        with collective(context, what):
            dist.barrier()


def sync_buffers(model: nn.Module, context: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each forward, so after the last step of an epoch each rank
    holds statistics updated by its own batch only; syncing at epoch ends makes every rank, and rank
    0's checkpoint, agree.
    """
    if not context.enabled:
        return
    with collective(context, "syncing BatchNorm buffers at the end of an epoch"):
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(obj: Any, context: DistContext, what: str) -> Any:
    """Rank 0's ``obj`` (any picklable object, sent between our own ranks only) on every rank."""
    if not context.enabled:
        return obj
    box = [obj]
    with collective(context, what):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj: Any, context: DistContext, what: str) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` without DDP)."""
    if not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    with collective(context, what):
        dist.all_gather_object(gathered, obj)
    return gathered


class SharedCounter:
    """An integer that every rank increments atomically: ``add(1)`` returns 1, 2, 3... across all ranks,
    each value to exactly one caller, without waiting for the other ranks.

    It lives in the key-value store of the process group (the store ``torchrun``'s rendezvous made, which
    every rank reaches), under ``key``; give each use a key of its own. Without DDP it is a plain integer.
    ``store`` is for tests (a ``torch.distributed.HashStore`` shared by threads).
    """

    def __init__(self, key: str, context: DistContext | None = None, store: dist.Store | None = None) -> None:
        self.key = key
        self.context = context or DistContext()
        if store is None and self.context.enabled:
            # the default group's store; PyTorch has no public accessor for it (DDP and elastic use this one)
            store = dist.distributed_c10d._get_default_store()
        self.store = store
        self._local = 0

    def add(self, amount: int = 1) -> int:
        """Add ``amount`` (0 reads) and return the new value."""
        if self.store is None:
            self._local += amount
            return self._local
        with collective(self.context, f"updating the shared counter {self.key}"):
            return int(self.store.add(self.key, amount))
