"""Cost of a network: parameters, FLOPs, time and peak memory of a forward (or training) step.

Used by ``attnseg profile`` and by the scripts in ``benchmarks/``. Peak memory is the allocator's
peak on CUDA; on the CPU it is the growth of the process's peak resident set (Linux ``VmHWM``,
reset through ``/proc/self/clear_refs`` before each measurement), i.e. what the step really costs
in RAM, allocator caching included.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attnseg.networks.utils import count_parameters

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(key: str) -> int | None:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Context manager measuring the extra peak memory (bytes) of the code it wraps.

    ``peak_bytes`` is None where it cannot be measured (CPU on a system without ``/proc``).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.peak_bytes: int | None = None
        self._base = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            with contextlib.suppress(OSError):
                _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
            self._base = (_status_kib("VmRSS") or 0) * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            hwm = _status_kib("VmHWM")
            self.peak_bytes = None if hwm is None else max(hwm * 1024 - self._base, 0)


@dataclass
class Profile:
    parameters: int
    gflops: float
    seconds: float
    peak_mib: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def count_gflops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass (a multiply-add counts as 2), in units of 1e9.

    Runs a copy of the model on the meta device: shapes only, no arithmetic, no memory.
    """
    meta_model = copy.deepcopy(model).to("meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        meta_model(torch.empty(input_shape, device="meta"))
    return counter.get_total_flops() / 1e9


def time_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of ``fn`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile_forward(model: nn.Module, input_shape: tuple[int, ...], device: str = "cpu", repeats: int = 3) -> Profile:
    """Parameters, GFLOPs, median time and extra peak memory of an inference forward pass."""
    model = model.to(device).eval()
    x = torch.randn(input_shape, device=device)

    def forward() -> object:
        with torch.inference_mode():
            return model(x)

    gflops = count_gflops(model, input_shape)
    with PeakMemory(device) as peak:
        forward()
    seconds = time_call(forward, repeats=repeats, warmup=0, device=device)
    peak_mib = None if peak.peak_bytes is None else peak.peak_bytes / 2**20
    return Profile(count_parameters(model), gflops, seconds, peak_mib)
