"""Network speed and memory: attnseg's U-Nets against MONAI's AttentionUnet and UNet at equal widths.

    .venv/bin/python -m benchmarks.network_speed [--dims 2 3] [--device cpu] [--rounds 5]

Widths 16, 32, 64, 128, 256 for every network (attnseg's ``feature_scale=4``; MONAI's
``channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2)``), 1 input channel, 2 classes; 2D on 256 x 256
at batch 4, 3D on 96^3 at batch 1. Each network runs:

* the forward pass in inference mode, and
* a full training step: forward, the loss ``attnseg train`` builds (Dice + cross-entropy; deep
  supervision for attnseg's networks), backward, gradient clipping, AdamW (one ``TrainStep``).

MONAI's networks run as a MONAI user runs them: default (contiguous) layout, fp32. attnseg's run in
channels-last, in fp32 and with the mixed precision ``attnseg train`` may choose on this device (bf16
where the CPU has bf16 kernels; bf16 or fp16 on CUDA). Every network is timed in turn, round after
round, in one process, so that background load hits them alike: the tables give medians and ratios
against MONAI's AttentionUnet from the same run. Peak memory is that of a network's first forward pass
or training step, each in a fresh process: the growth of the allocator's peak on CUDA, of the
process's peak resident set on a CPU (the step's includes AdamW's state).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

import torch
from monai.networks.nets import AttentionUnet
from monai.networks.nets import UNet as MonaiUNet
from torch import nn

from attnseg.networks import build_network
from attnseg.profiling import PeakMemory, count_gflops
from attnseg.runtime import Runtime, amp_candidates
from attnseg.timing import interleaved_times
from attnseg.training.config import Config
from attnseg.training.optim import build_optimizer
from attnseg.training.run import build_loss
from attnseg.training.step import TrainStep
from benchmarks.report import header, markdown_table, mib, ratio

WIDTHS = (16, 32, 64, 128, 256)
SETTINGS = {2: ((4, 1, 256, 256), "2D, 256 x 256, batch 4"), 3: ((1, 1, 96, 96, 96), "3D, 96^3, batch 1")}
BASELINE = "MONAI AttentionUnet"
TARGET_VS_MONAI = 0.80
TARGET_VS_UNET = 1.25


@dataclass
class Entry:
    name: str
    runtime: Runtime
    model: nn.Module
    parameters: int = 0
    gflops: float = 0.0
    peaks: dict[str, float | None] = field(default_factory=dict)
    ms: dict[str, float] = field(default_factory=dict)


def monai_networks(dims: int) -> dict[str, nn.Module]:
    strides = (2, 2, 2, 2)
    return {
        BASELINE: AttentionUnet(dims, 1, 2, channels=WIDTHS, strides=strides),
        "MONAI UNet": MonaiUNet(dims, 1, 2, channels=WIDTHS, strides=strides),
    }


def entries(dims: int, device: torch.device, networks: list[str]) -> list[Entry]:
    """MONAI's networks as a MONAI user runs them, attnseg's under each runtime worth showing."""
    accelerated = [amp for amp in amp_candidates(device, "auto") if amp != "off"]
    monai_precisions = ["off", *accelerated] if device.type == "cuda" else ["off"]  # MONAI GPU users run AMP too
    found = [
        Entry(name, Runtime(device.type, "contiguous", amp), model)
        for amp in monai_precisions
        for name, model in monai_networks(dims).items()
    ]
    for amp in ["off", *accelerated]:
        for name in networks:
            model = build_network(name, spatial_dims=dims, in_channels=1, out_channels=2, feature_scale=4)
            found.append(Entry(f"attnseg {name}", Runtime(device.type, "channels_last", amp), model))
    return found


def prepare(entry: Entry, shape: tuple[int, ...], device: torch.device, config: Config):
    """The entry's forward and training-step functions (its model copied into its runtime)."""
    entry.parameters = sum(p.numel() for p in entry.model.parameters())
    entry.gflops = count_gflops(entry.model, shape)
    runtime = entry.runtime
    inference = runtime.prepare_model(copy.deepcopy(entry.model).to(device)).eval()
    training = runtime.prepare_model(entry.model.to(device)).train()
    loss = build_loss(config, training).to(device)
    step = TrainStep(training, loss, build_optimizer(config.optimizer, training.parameters()), runtime, 12.0)
    image = torch.randn(shape, device=device)
    label = torch.randint(0, 2, (shape[0], *shape[2:]), device=device)

    def forward() -> None:
        with torch.inference_mode(), runtime.autocast():
            inference(runtime.prepare_input(image))

    return forward, lambda: step(image, label)


def input_shape(dims: int, scale: int = 1) -> tuple[int, ...]:
    batch, channels, *size = SETTINGS[dims][0]
    return (batch, channels, *(s // scale for s in size))


def measure(dims: int, device: torch.device, args: argparse.Namespace, clock) -> list[Entry]:
    """Times of every entry, interleaved round by round in this process."""
    shape = input_shape(dims, args.scale)
    networks, rounds = args.networks, args.rounds
    found = entries(dims, device, networks)
    calls = {}
    for index, entry in enumerate(found):
        forward, step = prepare(entry, shape, device, Config())
        calls[f"{index}/forward"], calls[f"{index}/step"] = forward, step
    seconds = interleaved_times(calls, repeats=rounds, warmup=1, device=device, clock=clock)
    for key, value in seconds.items():
        index, kind = key.split("/")
        found[int(index)].ms[kind] = value * 1000
    return found


def peak_memory(dims: int, device: torch.device, args: argparse.Namespace, index: int, kind: str) -> float | None:
    """Extra peak memory (MiB) of one entry's first forward pass or training step, in this process."""
    entry = entries(dims, device, args.networks)[index]
    forward, step = prepare(entry, input_shape(dims, args.scale), device, Config())
    with PeakMemory(device) as peak:
        (forward if kind == "forward" else step)()
    return None if peak.peak_bytes is None else peak.peak_bytes / 2**20


def measure_memory(dims: int, args: argparse.Namespace, found: list[Entry]) -> None:
    """Each entry's peaks, each in a fresh process: a process's allocator keeps what it freed, so only a
    fresh one shows what a pass really needs."""
    for index, entry in enumerate(found):
        for kind in ("forward", "step"):
            command = [sys.executable, "-m", "benchmarks.network_speed", "--device", args.device]
            command += ["--networks", *args.networks, "--scale", str(args.scale)]
            command += ["--memory-of", str(dims), str(index), kind]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
            lines = done.stdout.strip().splitlines()
            entry.peaks[kind] = json.loads(lines[-1]) if done.returncode == 0 and lines else None


CATEGORIES = {
    "convolutions": ("conv",),
    "normalisation": ("batch_norm", "instance_norm", "group_norm"),
    "activations": ("relu", "threshold", "prelu", "sigmoid", "clamp", "hardtanh"),
    "resizes": ("upsample", "interpolate"),
    "concatenation, copies": ("cat", "copy_", "clone", "_to_copy", "contiguous"),
}


def breakdown(entry: Entry, dims: int, device: torch.device, args: argparse.Namespace) -> dict[str, float]:
    """Milliseconds per category of operators (self time) in one forward + loss + backward pass, from
    torch.profiler (the optimizer step is left out; the profiler adds some overhead)."""
    from torch.profiler import ProfilerActivity, profile

    runtime = entry.runtime
    shape = input_shape(dims, args.scale)
    model = runtime.prepare_model(copy.deepcopy(entry.model).to(device)).train()
    loss_fn = build_loss(Config(), model).to(device)
    step = TrainStep(model, loss_fn, build_optimizer(Config().optimizer, model.parameters()), runtime, None)
    image = torch.randn(shape, device=device)
    label = torch.randint(0, 2, (shape[0], *shape[2:]), device=device)
    step(image, label)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        step.forward_loss(image, label).backward()
    totals = dict.fromkeys([*CATEGORIES, "everything else"], 0.0)
    for event in profiler.key_averages():
        if not event.key.startswith("aten::"):
            continue
        microseconds = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        name = next((c for c, keys in CATEGORIES.items() if any(k in event.key for k in keys)), "everything else")
        totals[name] += microseconds / 1000
    return totals


def breakdown_table(found: list[Entry], dims: int, device: torch.device, args: argparse.Namespace) -> str:
    rows = []
    for entry in found:
        totals = breakdown(entry, dims, device, args)
        total = sum(totals.values())
        # a training step costs about 3 forward passes of FLOPs (the backward computes two gradients)
        rate = 3 * entry.gflops / (totals["convolutions"] / 1000) if totals["convolutions"] else 0.0
        cells = [f"{ms:.0f} ms ({ms / total:.0%})" for ms in totals.values()]
        rows.append([entry.name, entry.runtime.name, f"{total:.0f} ms", *cells, f"{rate:.0f}"])
    headers = ["network", "layout/precision", "forward + backward", *CATEGORIES, "everything else"]
    return markdown_table([*headers, "convolution GFLOP/s"], rows)


def table(found: list[Entry]) -> str:
    base = next(e for e in found if e.name == BASELINE and e.runtime.amp == "off")
    rows = [
        [
            e.name,
            e.runtime.name,
            f"{e.parameters / 1e6:.2f} M",
            f"{e.gflops:.1f}",
            f"{e.ms['forward']:.0f} ms",
            f"{e.ms['step']:.0f} ms",
            ratio(e.ms["forward"], base.ms["forward"]),
            ratio(e.ms["step"], base.ms["step"]),
            mib(e.peaks.get("forward")),
            mib(e.peaks.get("step")),
        ]
        for e in found
    ]
    headers = ["network", "layout/precision", "params", "GFLOP", "forward", "train step"]
    headers += [f"forward vs {BASELINE}", f"step vs {BASELINE}", "forward peak", "step peak"]
    return markdown_table(headers, rows)


def targets(found: list[Entry]) -> str:
    """The issue's targets: attnseg attention_unet <= 0.80x MONAI's AttentionUnet (as its users run it),
    and <= 1.25x attnseg's unet under the same runtime."""
    base = next(e for e in found if e.name == BASELINE and e.runtime.amp == "off")
    lines = []
    for entry in (e for e in found if e.name == "attnseg attention_unet"):
        unet = next((e for e in found if e.name == "attnseg unet" and e.runtime == entry.runtime), None)
        for kind, label in (("step", "training step"), ("forward", "forward pass")):
            vs_monai = entry.ms[kind] / base.ms[kind]
            line = f"- {entry.runtime.name}, {label}: {vs_monai:.2f}x MONAI AttentionUnet"
            line += f" ({_verdict(vs_monai, TARGET_VS_MONAI)})"
            if unet is not None:
                vs_unet = entry.ms[kind] / unet.ms[kind]
                line += f", {vs_unet:.2f}x attnseg unet ({_verdict(vs_unet, TARGET_VS_UNET)})"
            lines.append(line)
    return "\n".join(lines)


def _verdict(value: float, target: float) -> str:
    return f"target <= {target:.2f}: {'met' if value <= target else 'NOT met'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=(2, 3))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (one device per run: ratios never mix)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; medians are shown (default 5)")
    parser.add_argument("--networks", nargs="+", default=["unet", "attention_unet"], help="attnseg networks")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time CPU seconds of this process instead of wall time: with --threads 1, ratios that a busy "
        "machine barely moves",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory columns (saves minutes)")
    parser.add_argument("--scale", type=int, default=1, help="divide the spatial sizes by this (quick checks only)")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also profile one forward + backward pass of each network: time per kind of operator",
    )
    parser.add_argument("--memory-of", nargs=3, metavar=("DIMS", "INDEX", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.memory_of:
        dims, index, kind = int(args.memory_of[0]), int(args.memory_of[1]), args.memory_of[2]
        print(json.dumps(peak_memory(dims, device, args, index, kind)))
        return 0
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(header(f"Network speed and memory vs MONAI at equal widths ({device.type})", device))
    for dims in args.dims:
        found = measure(dims, device, args, clock)
        if not args.no_memory:
            measure_memory(dims, args, found)
        kind = "CPU time" if args.cpu_time else "wall time"
        title = SETTINGS[dims][1] if args.scale == 1 else f"{input_shape(dims, args.scale)} (scaled down)"
        print(f"\n**{title}**, medians of {args.rounds} rounds ({kind})\n")
        print(table(found))
        print(f"\ntargets ({title}):\n{targets(found)}", flush=True)
        if args.breakdown:
            print(f"\nwhere a training step's time goes ({title}; torch.profiler, self time per operator kind)\n")
            print(breakdown_table(found, dims, device, args), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
