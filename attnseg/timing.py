"""Wall-clock timing of torch work: synchronised on GPUs, warm-up calls first, medians.

Used to choose a run's layout and precision (:mod:`attnseg.runtime`), by ``attnseg profile`` and by
the scripts in ``benchmarks/``. Interleaving the candidates round by round (A, B, C, A, B, C, ...)
exposes them to the same background load, so their ratios stay meaningful on a busy machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work; a no-op on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object],
    repeats: int = 3,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median wall time of ``fn`` in seconds, after ``warmup`` untimed calls (``clock``: see
    :func:`interleaved_times`)."""
    return interleaved_times({"fn": fn}, repeats, warmup, device, clock=clock)["fn"]


def interleaved_times(
    fns: Mapping[str, Callable[[], object]],
    repeats: int = 3,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    reduce: Callable[[list[float]], float] = statistics.median,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Seconds per call of each function, timed in rounds that run every function once.

    Every function first runs ``warmup`` untimed times (allocator, kernel selection); then ``repeats``
    rounds each time every function once, in order. Returns ``reduce`` (the median) of each one's times.
    ``clock`` is wall time by default; ``time.process_time`` (CPU time of this process) with one torch
    thread gives figures that background load barely moves, for comparisons on a busy machine.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            synchronize(device)
            start = clock()
            fn()
            synchronize(device)
            times[name].append(clock() - start)
    return {name: reduce(values) for name, values in times.items()}
