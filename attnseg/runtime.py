"""How a network runs on a device: memory layout and mixed precision, chosen by measurement, recorded.

Two choices change the speed of a run and not its network:

* **layout**: ``channels_last`` (N, *S, C in memory) or ``contiguous`` (N, C, *S). Convolutions run
  faster channels-last on CPUs (oneDNN) and on GPU tensor cores, but not everywhere (some 3D
  convolutions, some older cuDNN versions), hence the measurement.
* **mixed precision** (``amp``): autocast to ``bf16`` or ``fp16``, or ``off`` (fp32). Autocast keeps
  the precision-sensitive operations (reductions, softmax, losses, batch-norm statistics) in fp32; bf16
  has fp32's range, so it needs no loss scaling; fp16 gets a gradient scaler (CUDA only).

``attnseg train`` (``training.layout`` and ``training.amp``, both ``auto`` by default) times a few
training steps of every candidate on its first batch and keeps the fastest: on CUDA the candidates are
the two layouts under bf16 (fp16 where bf16 is missing); on a CPU the two layouts in fp32 and, where
oneDNN has bf16 kernels, in bf16 too. ``training.deterministic`` skips the measurement and takes the
first candidate (channels-last; bf16/fp16 on CUDA, fp32 elsewhere), since a timed choice can differ
from run to run. The choice, why, and the measured times go to ``runtime.json`` in the model directory;
a resumed run reuses them, and ``attnseg predict`` follows them on the same kind of device.

A third choice is the number of torch threads on the CPU (intra-op parallelism, ``training.threads``):
torch's default is one per core (or ``OMP_NUM_THREADS``), but on a machine whose cores other processes
already hold, threads of one operation wait for each other, and two threads on two busy cores measured
10-20 times slower than one (docs/generalisation.md). :func:`choose_threads` takes as many threads as
cores other processes leave idle (at least one, at most torch's default) when the user set nothing; the
count and why also go to ``runtime.json`` (``threads``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from attnseg.errors import ConfigError
from attnseg.timing import interleaved_times

Layout = Literal["channels_last", "contiguous"]
LAYOUTS: tuple[str, ...] = ("channels_last", "contiguous")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_SETTINGS: tuple[str, ...] = ("auto", "bf16", "fp16", "off")


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """``torch.channels_last`` for 2D (N, C, H, W) tensors, ``torch.channels_last_3d`` for 3D ones."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"channels-last needs 2 or 3 spatial dims, got {spatial_dims}")
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


@dataclass(frozen=True)
class Runtime:
    """One way of running networks on one kind of device (``cpu``, ``cuda``, ...).

    ``reason`` says why it was chosen; ``step_ms`` holds the measured milliseconds per step of every
    candidate (by :attr:`name`) when it was chosen by measurement.
    """

    device: str
    layout: Layout = "channels_last"
    amp: str = "off"
    reason: str = ""
    step_ms: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.layout}/{'fp32' if self.amp == 'off' else self.amp}"

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES.get(self.amp)

    def memory_format(self, spatial_dims: int) -> torch.memory_format:
        return channels_last_format(spatial_dims) if self.layout == "channels_last" else torch.contiguous_format

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Put the model's convolution weights in this layout (in place; returns the model)."""
        dims = 3 if any(p.dim() == 5 for p in model.parameters()) else 2
        return model.to(memory_format=self.memory_format(dims))

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """A (B, C, *S) batch in this layout (other tensors unchanged)."""
        return x.contiguous(memory_format=self.memory_format(x.dim() - 2)) if x.dim() in (4, 5) else x

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this precision (a no-op for fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.amp_dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Runtime:
        known = {k: data[k] for k in ("device", "layout", "amp", "reason", "step_ms") if k in data}
        return cls(**known)


def cpu_has_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX-512 BF16, AMX, or AVX-512 emulation)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_candidates(device: torch.device, amp: str, setting: str = "training.amp") -> list[str]:
    """The precisions to consider for ``amp`` (one of :data:`AMP_SETTINGS`), the default first."""
    if amp not in AMP_SETTINGS:
        raise ConfigError(f"{setting}={amp}: choose one of {', '.join(AMP_SETTINGS)}")
    cuda = device.type == "cuda"
    cuda_bf16 = cuda and torch.cuda.is_bf16_supported()
    if amp == "fp16" and not cuda:
        raise ConfigError(
            f"{setting}=fp16 needs a CUDA device (fp16 training needs loss scaling); use bf16 or off on {device.type}"
        )
    if amp == "bf16" and cuda and not cuda_bf16:
        raise ConfigError(f"{setting}=bf16: this GPU has no bf16 support; use fp16 or off")
    if amp != "auto":
        return [amp]
    if cuda:
        return ["bf16" if cuda_bf16 else "fp16"]
    return ["off", "bf16"] if device.type == "cpu" and cpu_has_bf16() else ["off"]


def runtime_candidates(
    device: torch.device, layout: str = "auto", amp: str = "auto", setting: str = "training"
) -> list[Runtime]:
    """Every (layout, precision) pair the settings allow on ``device``; the first is the default."""
    if layout not in ("auto", *LAYOUTS):
        raise ConfigError(f"{setting}.layout={layout}: choose one of auto, {', '.join(LAYOUTS)}")
    layouts = LAYOUTS if layout == "auto" else (layout,)
    return [
        Runtime(device.type, lay, precision)
        for precision in amp_candidates(device, amp, f"{setting}.amp")
        for lay in layouts
    ]


def fastest(
    candidates: list[Runtime],
    runner: Callable[[Runtime], Callable[[], object]],
    device: torch.device,
    repeats: int = 3,
    what: str = "training step",
) -> Runtime:
    """The candidate whose ``runner(candidate)()`` is quickest.

    Each candidate runs once to warm up (a candidate that runs out of memory there is left out), then
    ``repeats`` rounds time every candidate once, in turn, so that they share the machine's background
    load; the best time of each counts. If memory runs out, the first candidate that ran is kept (or
    the first of all, and the run meets the error itself).
    """
    calls: dict[str, Callable[[], object]] = {}
    skipped: list[str] = []
    for candidate in candidates:
        try:
            call = runner(candidate)
            call()
            calls[candidate.name] = call
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            skipped.append(candidate.name)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if not calls:
        return replace(candidates[0], reason=f"every candidate ran out of memory while its {what} was timed")
    try:
        seconds = interleaved_times(calls, repeats, warmup=0, device=device, reduce=min)
    except (RuntimeError, MemoryError) as error:  # the candidates' copies together did not fit
        if not is_out_of_memory(error):
            raise
        first = next(c for c in candidates if c.name in calls)
        return replace(first, reason=f"out of memory while timing the candidates together; kept {first.name}")
    best = min((c for c in candidates if c.name in seconds), key=lambda c: seconds[c.name])
    reason = f"the fastest {what} of {len(seconds)} timed on this {device.type} (best of {repeats} rounds)"
    if skipped:
        reason += f"; out of memory: {', '.join(skipped)}"
    return replace(best, reason=reason, step_ms={name: round(s * 1000, 2) for name, s in seconds.items()})


def inference_runtime(recorded: dict[str, Any] | None, device: torch.device, amp: str = "auto") -> Runtime:
    """How to run a trained model for prediction on ``device``.

    The training run's choice (``runtime.json``) when it was made on the same kind of device; else
    channels-last, with fp16 autocast on CUDA and fp32 elsewhere. ``amp`` other than ``auto``
    overrides the precision.
    """
    if recorded is not None and recorded.get("device") == device.type:
        runtime = replace(Runtime.from_dict(recorded), reason=f"as the training chose on {device.type}")
    else:
        runtime = Runtime(device.type, "channels_last", "fp16" if device.type == "cuda" else "off", "the default")
    if amp != "auto":
        (precision,) = amp_candidates(device, amp, "--amp")
        runtime = replace(runtime, amp=precision, reason=f"{runtime.reason}; precision set to {amp}")
    return runtime


@dataclass(frozen=True)
class Threads:
    """How many torch threads a run computes with on the CPU, and why (``runtime.json``'s ``threads``)."""

    count: int
    reason: str


def choose_threads(
    setting: int | None,
    deterministic: bool,
    environ: Mapping[str, str],
    default: int,
    cores: int,
    busy: Callable[[], float | None],
) -> Threads:
    """The intra-op thread count for ``setting`` (``training.threads``; None: not set), given torch's
    ``default`` count, the ``cores`` this process may use and ``busy()``, the cores other processes keep
    busy (None: unknown; called only when the count depends on it). Without a setting: the cores left
    idle, rounded, at least one and at most the default, because threads of one operation wait for each
    other behind other processes. A count set by the user (or by ``OMP_NUM_THREADS``), and a
    deterministic run (results can vary with the thread count), keep theirs."""
    if setting is not None:
        return Threads(setting, f"set: training.threads={setting}")
    if environ.get("OMP_NUM_THREADS"):
        return Threads(default, f"set: OMP_NUM_THREADS={environ['OMP_NUM_THREADS']}")
    if deterministic:
        return Threads(default, "training.deterministic: torch's default, not chosen by the load (it varies by run)")
    if default == 1:
        return Threads(1, "torch's default: one thread")
    others = busy()
    if others is None:
        return Threads(default, "torch's default (the machine's load is unknown)")
    count = max(1, min(default, round(cores - others)))
    if count == default:
        return Threads(default, f"torch's default: other processes use {others:.1f} of {cores} cores")
    return Threads(
        count,
        f"other processes use {others:.1f} of {cores} cores: {count} thread(s) on the idle ones, as threads of one "
        "operation wait for each other behind other processes (training.threads sets a count)",
    )


def busy_cores(seconds: float = 0.2) -> float | None:
    """The cores other processes keep busy: the larger of the machine's busy share over ``seconds`` while
    this process sleeps (``/proc/stat``: what runs now) and the 1-minute load minus this process's own
    one (what ran lately; the load lags, and counts this process once it computes). None where neither
    can be read."""
    estimates = []
    with contextlib.suppress(OSError):
        estimates.append(os.getloadavg()[0] - 1.0)
    try:
        before = _cpu_ticks()
        time.sleep(seconds)
        after = _cpu_ticks()
        total, idle = after[0] - before[0], after[1] - before[1]
        if total > 0:
            estimates.append((1.0 - idle / total) * (os.cpu_count() or 1))
    except (OSError, ValueError, IndexError):
        pass
    return max(0.0, max(estimates)) if estimates else None


def _cpu_ticks() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of the machine's CPUs since boot, from /proc/stat's first line."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    return sum(values), values[3] + values[4]


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def run_threads(setting: int | None, deterministic: bool) -> Iterator[Threads]:
    """Compute with :func:`choose_threads`'s count inside the block, torch's previous count after it (the
    caller's process, a test or a notebook, keeps its own)."""
    previous = torch.get_num_threads()
    threads = choose_threads(setting, deterministic, os.environ, previous, usable_cores(), busy_cores)
    torch.set_num_threads(threads.count)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
