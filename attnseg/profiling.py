"""Cost of a network: parameters, FLOPs, time and peak memory of a forward pass and a training step.

Used by ``attnseg profile`` and by the scripts in ``benchmarks/``. The training step is the one
``attnseg train`` runs (:mod:`attnseg.training.step`), with its loss, optimizer, memory layout and
precision. Peak memory is the allocator's peak on CUDA; on the CPU it is the growth of the process's
peak resident set (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before each
measurement), i.e. what the step really costs in RAM, allocator caching included.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attnseg.networks.utils import count_parameters
from attnseg.runtime import Runtime, inference_runtime
from attnseg.timing import time_call
from attnseg.training.config import Config
from attnseg.training.run import build_loss
from attnseg.training.step import choose_runtime, random_batch, step_runner

__all__ = ["PeakMemory", "Profile", "count_gflops", "profile_forward", "profile_training", "time_call"]

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
    """Cost of a network on one input shape: forward pass (as ``attnseg predict`` runs it) and, from
    :func:`profile_training`, a training step (as ``attnseg train`` runs it). Times are medians."""

    parameters: int
    gflops: float
    forward_ms: float
    peak_mib: float | None
    train_step_ms: float | None = None
    train_peak_mib: float | None = None
    runtime: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_gflops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass (a multiply-add counts as 2), in units of 1e9.

    Runs a copy of the model on the meta device: shapes only, no arithmetic, no memory.
    """
    meta_model = copy.deepcopy(model).to("meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        meta_model(torch.empty(input_shape, device="meta"))
    return counter.get_total_flops() / 1e9


def _mib(peak: PeakMemory) -> float | None:
    return None if peak.peak_bytes is None else peak.peak_bytes / 2**20


def profile_forward(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: str | torch.device = "cpu",
    repeats: int = 3,
    runtime: Runtime | None = None,
) -> Profile:
    """Parameters, GFLOPs, median time and extra peak memory of an inference forward pass, run as
    ``attnseg predict`` runs a model: under ``runtime`` (layout, precision), by default the one it
    uses for a model without a recorded runtime (channels-last; fp16 on CUDA, fp32 elsewhere)."""
    device = torch.device(device)
    runtime = runtime or inference_runtime(None, device)
    gflops = count_gflops(model, input_shape)
    model = runtime.prepare_model(copy.deepcopy(model).to(device)).eval()
    x = torch.randn(input_shape, device=device)

    def forward() -> object:
        with torch.inference_mode(), runtime.autocast():
            return model(x)

    with PeakMemory(device) as peak:
        forward()
    seconds = time_call(forward, repeats=repeats, warmup=0, device=device)
    return Profile(count_parameters(model), gflops, seconds * 1000, _mib(peak), runtime=runtime.to_dict())


def profile_training(
    config: Config,
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: str | torch.device = "cpu",
    repeats: int = 3,
) -> Profile:
    """A training step and a forward pass exactly as ``attnseg train`` runs them for ``config``.

    The loss ``attnseg train`` builds for this model (deep supervision, or the guided-attention loss),
    the configured optimizer and gradient clipping, and the layout and precision it would choose
    (measured on this random batch for ``auto``, see :mod:`attnseg.runtime`). The forward pass is
    timed under the same runtime, as ``attnseg predict`` would run the trained model. Peak memory of
    the step is that of the first one (it allocates the optimizer's state).
    """
    device = torch.device(device)
    image, label = random_batch(input_shape, getattr(model, "out_channels", 2), device)
    model = model.to(device)
    loss_fn = build_loss(config, model).to(device)
    runtime = choose_runtime(config, model, loss_fn, {"image": image, "label": label}, device)
    step = step_runner(config, model, loss_fn, image, label)(runtime)
    with PeakMemory(device) as peak:
        step()
    seconds = time_call(step, repeats=repeats, warmup=0, device=device)
    forward = profile_forward(model, input_shape, device, repeats, runtime)
    return replace(forward, train_step_ms=seconds * 1000, train_peak_mib=_mib(peak))
