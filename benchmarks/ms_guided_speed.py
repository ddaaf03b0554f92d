"""Training speed of the multi-scale guided network's light preset (``ms_guided``) in the demo's setting,
before and after the execution changes that keep its maths (issue 11).

    .venv/bin/python benchmarks/ms_guided_speed.py [--rounds 5] [--threads N] [--profile]

The demo's setting: 2D axial slices of ``mni152-tissue`` at 2 mm (80 x 96, which the network pads to
96 x 96), batch 8, 3 classes, the trainer's step (forward, ``GuidedAttentionLoss`` with Dice + CE per
head, backward, gradient clipping at 12, AdamW). Random data of that shape: speed does not depend on
the values. Every configuration is built in this one process and timed in turn, round after round
(medians), so a shared machine's load falls on all of them alike:

* ``ms_guided`` as it ran before (``batch_scales=False, channels_last=False``: the literal loop over
  the four scales in PyTorch's default layout), then each change alone, then both (the default);
* the demo's 2D Attention U-Net (``attention_unet``, feature_scale 4, deep supervision) as it runs
  in ``attnseg train``, the in-process reference.

Columns: wall time and CPU time (both threads) per image, the speed-up over the unoptimised path, and
the achieved arithmetic rate (the forward FLOPs times 3, a training step's usual cost). ``--profile``
adds where the time goes (torch.profiler on one step of the default path: the top operators, and the
forward FLOPs per part of the network).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from attnseg.losses import DeepSupervisedLoss, GuidedAttentionLoss, SegmentationLoss
from attnseg.networks import build_network
from benchmarks.report import header

BATCH, CLASSES, SLICE = 8, 3, (80, 96)
CONFIGURATIONS: dict[str, tuple[str, dict]] = {
    "ms_guided, unoptimised (literal loop, default layout)": (
        "ms_guided",
        {"batch_scales": False, "channels_last": False},
    ),
    "ms_guided, channels-last only": ("ms_guided", {"batch_scales": False, "channels_last": True}),
    "ms_guided, stacked scales only": ("ms_guided", {"batch_scales": True, "channels_last": False}),
    "ms_guided, both (default)": ("ms_guided", {}),
    "attention_unet (the demo's network)": ("attention_unet", {"feature_scale": 4, "aux_outputs": True}),
}
BASELINE = next(iter(CONFIGURATIONS))


def build(name: str, options: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    if name.startswith("ms_"):
        options = {"memory_limit_gib": None, **options}  # the pre-flight check runs once per shape, not per step
    model = build_network(name, in_channels=1, out_channels=CLASSES, **options).train()
    segmentation = SegmentationLoss("dice_ce")
    loss = (
        GuidedAttentionLoss(segmentation=segmentation) if name.startswith("ms_") else DeepSupervisedLoss(segmentation)
    )
    return model, loss


def training_step(model: torch.nn.Module, loss_fn: torch.nn.Module) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 1, *SLICE, generator=generator)
    y = torch.randint(0, CLASSES, (BATCH, *SLICE), generator=generator)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        optimizer.step()

    return step


def forward_gflops(model: torch.nn.Module) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(BATCH, 1, *SLICE))
    return counter.get_total_flops() / 1e9


def where_the_time_goes(model: torch.nn.Module, step: Callable[[], None]) -> str:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    with FlopCounterMode(display=False, depth=32) as counter, torch.no_grad():
        model(torch.zeros(BATCH, 1, *SLICE))
    flops = {name: sum(counts.values()) for name, counts in counter.get_flop_counts().items()}
    total = flops["Global"]

    def under(*prefixes: str) -> float:
        """FLOPs inside the modules named by ``prefixes``: the outermost modules that ran under them (the
        stacked encoder-decoder runs its layers, not itself)."""
        names = [k for k in flops if any(k == p or k.startswith(p + ".") for p in prefixes)]
        outermost = [k for k in names if not any(k.startswith(o + ".") for o in names if o != k)]
        return sum(flops[k] for k in outermost)

    net = "MultiScaleGuidedAttentionNet"
    rows = [
        ("backbone (ResNet-18)", under(f"{net}.backbone")),
        ("projections + F_MS fusion", under(f"{net}.projections", f"{net}.fuse")),
    ]
    for index in range(len(model.refinement)):
        prefix = f"{net}.refinement.{index}"
        for kind, label in (("semantic", "encoder-decoder"), ("position", "PAM branches"), ("channel", "CAM branches")):
            rows.append((f"step {index + 1} {label}", under(f"{prefix}.{kind}")))
    rows.append(("everything else (heads, A_s convs, resizes)", total - sum(r[1] for r in rows)))
    lines = ["| part | forward GFLOP per batch | share |", "|---|---|---|"]
    lines += [f"| {label} | {value / 1e9:.1f} | {value / total:.0%} |" for label, value in rows]
    return (
        f"{table}\n\nforward FLOPs by part (batch {BATCH}, {SLICE[0]} x {SLICE[1]} padded to 96 x 96):\n\n"
        + "\n".join(lines)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per configuration (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true", help="also show where the time of the default path goes")
    parser.add_argument(
        "--only", nargs="+", choices=range(len(CONFIGURATIONS)), type=int, help="configurations by index (0-4)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = [name for i, name in enumerate(CONFIGURATIONS) if args.only is None or i in args.only]
    runs = {}
    for label in chosen:
        model, loss = build(*CONFIGURATIONS[label])
        runs[label] = (model, training_step(model, loss), forward_gflops(model))
        runs[label][1]()  # warm-up: oneDNN primitives, allocator
    wall: dict[str, list[float]] = {label: [] for label in runs}
    cpu: dict[str, list[float]] = {label: [] for label in runs}
    for round_ in range(args.rounds):
        for label, (_, step, _) in runs.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            step()
            wall[label].append(time.perf_counter() - started)
            cpu[label].append(time.process_time() - started_cpu)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)

    print("\n" + header("MS guided network, 2D light preset, training speed"))
    print(
        f"training step, batch {BATCH}, {SLICE[0]} x {SLICE[1]} slices, {CLASSES} classes, medians of {args.rounds}\n"
    )
    print(
        "| configuration | wall ms / image | CPU ms / image | speed-up (wall) | speed-up (CPU) "
        "| GFLOP / image | GFLOP/s |"
    )
    print("|---|---|---|---|---|---|---|")
    base_wall = statistics.median(wall[BASELINE]) if BASELINE in wall else None
    base_cpu = statistics.median(cpu[BASELINE]) if BASELINE in cpu else None
    for label, (_, _, gflops) in runs.items():
        w, c = statistics.median(wall[label]), statistics.median(cpu[label])
        speed_wall = f"x{base_wall / w:.2f}" if base_wall else ""
        speed_cpu = f"x{base_cpu / c:.2f}" if base_cpu else ""
        step_gflop = 3 * gflops
        print(
            f"| {label} | {1000 * w / BATCH:.0f} | {1000 * c / BATCH:.0f} | {speed_wall} | {speed_cpu} "
            f"| {step_gflop / BATCH:.1f} | {step_gflop / w:.0f} |"
        )
    if args.profile:
        model, loss = build("ms_guided", {})
        step = training_step(model, loss)
        step()
        print("\nwhere the time goes: one training step of the default path\n")
        print(where_the_time_goes(model, step))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
