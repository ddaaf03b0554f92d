"""Pre-flight memory estimate: how much memory a forward (and backward) pass will need, found without
allocating it.

``estimate_step_memory`` replays the network on the *meta* device (shapes only, no data) with the
model's own code, through ``torch.func.functional_call`` with meta copies of the parameters, and tracks
the bytes of every tensor alive at each moment of the forward and, for a training step, the backward
pass. The peak of that live set, plus parameters, buffers and gradients, is what the allocator must
serve. It sees everything the real pass keeps (activations saved for backward, N x N attention maps of
a naive position attention, gradients), but not allocator caching, fragmentation or kernel
workspaces, so measured peaks are somewhat higher (see benchmarks/ms_guided_memory.py for the ratio).
Optimiser state (2 x parameters for Adam) is the trainer's and is not included; autocast is not
modelled (activations are counted in the input's dtype, an upper bound under bf16/fp16 autocast).

``available_memory`` says how much a device can still give (for ``memory_limit_gib="auto"``).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from attnseg.errors import ConfigError

GIB = 2**30
_MEMINFO = Path("/proc/meminfo")
_CGROUPS = Path("/sys/fs/cgroup")  # a container's limit, which /proc/meminfo does not show
_SELF_CGROUP = Path("/proc/self/cgroup")


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes the process can still allocate on ``device``; None where it cannot be read.

    CPU: the kernel's MemAvailable, or less when the process runs in a cgroup (a container, a batch
    job) whose limit leaves less. CUDA: the driver's free memory plus what PyTorch's caching allocator
    holds unused.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    candidates = []
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    candidates += _cgroup_room()
    return min(candidates) if candidates else None


def _cgroup_room() -> list[int]:
    """limit - usage of the process's memory cgroup and of every cgroup above it that has a limit
    (cgroup v2: memory.max / memory.current; v1: memory.limit_in_bytes / memory.usage_in_bytes)."""
    try:
        lines = _SELF_CGROUP.read_text().splitlines()
    except OSError:
        return []
    rooms = []
    for line in lines:
        _, controllers, relative = line.split(":", 2)
        if controllers == "":
            root, files = _CGROUPS, ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            root, files = _CGROUPS / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        folder = root / relative.lstrip("/")
        for group in (folder, *folder.parents):
            if not group.is_relative_to(root):
                break
            try:
                limit = (group / files[0]).read_text().strip()
                if limit != "max" and int(limit) < 2**60:  # v1 writes "no limit" as a huge number
                    rooms.append(int(limit) - int((group / files[1]).read_text()))
            except (OSError, ValueError):
                continue
    return rooms


_estimating = 0  # > 0 while estimate_step_memory replays a model on the meta device


def estimating_memory() -> bool:
    """True inside ``estimate_step_memory``: modules may then stand in for fused kernels (which the meta
    device cannot run) with something that keeps the same tensors; FLOP counting on meta is unaffected."""
    return _estimating > 0


class MemoryBudgetError(ConfigError):
    """A configuration would need more memory than the user allows; raised before anything is allocated."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a pass needs: ``parameters`` (parameters and buffers, already resident) and ``peak_live``
    (the peak of tensors created by the pass: activations, attention maps, gradients)."""

    parameters: int
    peak_live: int

    @property
    def total(self) -> int:
        return self.parameters + self.peak_live

    @property
    def total_gib(self) -> float:
        return self.total / GIB


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of storages created under it, freed when their last tensor dies."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tensors: dict[int, int] = {}  # storage -> number of live tensors on it
        self._bytes: dict[int, int] = {}  # storage -> bytes

    @staticmethod
    def _key(t: torch.Tensor) -> int:
        return t.untyped_storage()._cdata

    def _release(self, key: int) -> None:
        self._tensors[key] -= 1
        if self._tensors[key] == 0:
            self.live -= self._bytes.pop(key)
            del self._tensors[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        inputs = {self._key(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = self._key(t)
            if key not in self._tensors:
                if key in inputs:  # a view or in-place result on storage we do not own (parameters, input)
                    continue
                self._tensors[key] = 0
                self._bytes[key] = t.untyped_storage().nbytes()
                self.live += self._bytes[key]
                self.peak = max(self.peak, self.live)
            self._tensors[key] += 1
            weakref.finalize(t, self._release, key)
        return out


def _tensors_in(output: object) -> Iterator[torch.Tensor]:
    """Every tensor in a network output: a tensor, a dataclass, or nested lists/tuples/dicts of them."""
    if isinstance(output, torch.Tensor):
        yield output
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        for f in dataclasses.fields(output):
            yield from _tensors_in(getattr(output, f.name))
    elif isinstance(output, (list, tuple)):
        for item in output:
            yield from _tensors_in(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from _tensors_in(item)


def estimate_step_memory(
    model: nn.Module,
    input_shape: tuple[int, ...],
    backward: bool | None = None,
    dtype: torch.dtype = torch.float32,
    **forward_kwargs: object,
) -> MemoryEstimate:
    """Estimate the memory of one pass of ``model`` on an input of ``input_shape``.

    Args:
        model: any module; it is not modified and its weights are not copied.
        input_shape: (B, C, *spatial).
        backward: also run a backward pass (a training step). Default: ``model.training``.
        dtype: the input dtype (activations follow it).
        forward_kwargs: passed to the model's forward.
    """
    backward = model.training if backward is None else backward
    resident = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    meta = {
        name: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad and backward)
        for name, t in (*model.named_parameters(), *model.named_buffers())
    }
    x = torch.empty(input_shape, dtype=dtype, device="meta")
    global _estimating
    _estimating += 1
    try:
        with _LiveBytes() as tracker, torch.set_grad_enabled(backward):
            output = functional_call(model, meta, (x,), forward_kwargs)
            if backward:
                tensors = [t for t in _tensors_in(output) if t.requires_grad]
                if tensors:
                    torch.stack([t.float().sum() for t in tensors]).sum().backward()
            del output
    finally:
        _estimating -= 1
    return MemoryEstimate(parameters=resident, peak_live=tracker.peak)
