"""Training step of every multi-scale preset against the Attention U-Net, at the same batch and size (issue 20).

Each network's step is the one ``attnseg train`` runs for it (``attnseg.training.step``: its loss, its own
optimiser and gradient clipping from its recipe, see ``attnseg train --print-config``), on random data of
the given shape, in a fixed runtime (channels-last, fp32 unless ``--amp bf16``) so that the networks are
compared and not the runtime choice. All of them are built in this one process and timed in turn,
round after round (``attnseg.timing.interleaved_times``): with ``--threads 1 --cpu-time`` the CPU time of
one thread, which other processes on a shared machine barely move. Also the GFLOP of one forward pass
per image. The target of issue 20: ``ms_guided_cpu``'s step at most 3x the Attention U-Net's.

    python -m benchmarks.ms_guided_presets_speed --threads 1 --cpu-time                  # 96 x 96, batch 8
    python -m benchmarks.ms_guided_presets_speed --size 256 256 --batch 4 --threads 1 --cpu-time
"""

from __future__ import annotations

import argparse
import time

import torch

from attnseg.networks import build_network
from attnseg.networks.utils import count_parameters
from attnseg.profiling import count_gflops
from attnseg.runtime import Runtime
from attnseg.timing import interleaved_times
from attnseg.training.config import load_config
from attnseg.training.run import build_loss
from attnseg.training.step import random_batch, step_runner
from benchmarks.report import header, markdown_table

NETWORKS = {  # name -> network options (the benchmark's Attention U-Net: the demo's)
    "attention_unet": {"feature_scale": 4, "aux_outputs": True},
    "ms_guided_cpu": {},
    "ms_guided_hr": {},
    "ms_guided": {},
}
TARGET = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[96, 96])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--amp", choices=["off", "bf16"], default="off")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cpu-time", action="store_true", help="CPU time of this process instead of wall time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (args.batch, 1, *args.size)
    image, label = random_batch(shape, args.classes, torch.device("cpu"))
    runtime = Runtime("channels_last", args.amp, reason="fixed")
    steps, rows = {}, {}
    for name in args.networks:
        config = load_config(None, [f"network.name={name}"])
        model = build_network(name, in_channels=1, out_channels=args.classes, **NETWORKS[name])
        gflops = count_gflops(model.eval(), (1, *shape[1:]))
        steps[name] = step_runner(config, model.train(), build_loss(config, model), image, label)(runtime)
        optimizer = f"{config.optimizer.name} {config.optimizer.lr:g}, clip {config.training.grad_clip}"
        rows[name] = [name, f"{count_parameters(model) / 1e6:.2f} M", f"{gflops:.2f}", optimizer]
    clock = time.process_time if args.cpu_time else time.perf_counter
    seconds = interleaved_times(steps, repeats=args.rounds, warmup=1, clock=clock)
    reference = seconds.get("attention_unet")
    table = []
    for name, row in rows.items():
        ratio = seconds[name] / reference if reference else float("nan")
        verdict = (
            f" (target <= {TARGET:g}x: {'met' if ratio <= TARGET else 'not met'})" if name == "ms_guided_cpu" else ""
        )
        table.append([*row, f"{seconds[name] * 1000:.0f} ms", f"{ratio:.2f}x{verdict}"])
    what = "CPU time" if args.cpu_time else "wall time"
    size = " x ".join(map(str, args.size))
    print(
        header(f"Training step, {size}, batch {args.batch}, channels-last/{args.amp}, {what}, medians of {args.rounds}")
    )
    headers = ["network", "parameters", "GFLOP / image", "optimiser (recipe)", "training step", "vs attention_unet"]
    print(markdown_table(headers, table))


if __name__ == "__main__":
    main()
