"""Position attention (DANet's PAM, the multi-scale guided network's): naive against memory-efficient.

    .venv/bin/python -m benchmarks.position_attention [--sizes 32 64 128] [--batch 2] [--channels 64]

One ``PositionAttention`` module (64 channels, as in the multi-scale network's head; q and k at 64/8)
on square grids of 32^2, 64^2 and 128^2 positions (the network's attention grid is the input / 4:
inputs of 128^2 to 512^2). ``naive`` is the literal formula, which stores the N x N attention map;
``sdpa`` is ``scaled_dot_product_attention``'s fused kernel, which never does. For each: the inference
forward pass, the training pass (forward and backward), and the peak memory of the training pass
(growth of the process's peak resident set, each case in a fresh process). Ratios are naive / sdpa at
the same size, from the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from attnseg.networks.blocks.position_attention import PositionAttention, attention_map_bytes
from attnseg.profiling import PeakMemory
from attnseg.timing import interleaved_times
from benchmarks.report import header, markdown_table, mib, ratio

IMPLEMENTATIONS = ("naive", "sdpa")


def run_case(size: int, implementation: str, batch: int, channels: int, repeats: int) -> dict[str, float | None]:
    """One case in this process: milliseconds of the forward and training passes, training peak (MiB)."""
    torch.manual_seed(0)
    module = PositionAttention(channels, implementation=implementation)
    with torch.no_grad():
        module.gamma.fill_(0.5)  # gamma starts at 0; any value gives the same cost
    x = torch.randn(batch, channels, size, size, requires_grad=True)

    def forward() -> None:
        with torch.inference_mode():
            module(x)

    def training() -> None:
        module(x).square().mean().backward()

    with PeakMemory() as peak:
        training()
    seconds = interleaved_times({"forward": forward, "training": training}, repeats=repeats, warmup=1)
    return {
        "forward_ms": seconds["forward"] * 1000,
        "training_ms": seconds["training"] * 1000,
        "peak_mib": None if peak.peak_bytes is None else peak.peak_bytes / 2**20,
    }


def _in_subprocess(args: argparse.Namespace, size: int, implementation: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.position_attention", "--case", str(size), implementation]
    command += ["--batch", str(args.batch), "--channels", str(args.channels), "--repeats", str(args.repeats)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(args: argparse.Namespace, results: dict[tuple[int, str], dict]) -> str:
    rows = []
    for (size, implementation), r in results.items():
        base = results[(size, "sdpa")]
        positions = size * size
        stored = attention_map_bytes(args.batch, positions, positions) / 2**20 if implementation == "naive" else None
        if "error" in r:
            rows.append([f"{size}^2", implementation, f"failed: {r['error']}", "", "", "", "", "", ""])
            continue
        ok = "error" not in base
        rows.append(
            [
                f"{size}^2 ({size * size:,} positions)",
                implementation,
                f"{r['forward_ms']:.1f} ms",
                f"{r['training_ms']:.1f} ms",
                mib(r["peak_mib"]),
                mib(stored) if stored is not None else "never stored",
                ratio(r["forward_ms"], base["forward_ms"]) if ok else "n/a",
                ratio(r["training_ms"], base["training_ms"]) if ok else "n/a",
                ratio(r["peak_mib"], base["peak_mib"]) if ok and base["peak_mib"] else "n/a",
            ]
        )
    headers = ["grid", "implementation", "forward", "forward + backward", "training peak", "one N x N map"]
    return markdown_table([*headers, "forward vs sdpa", "training vs sdpa", "memory vs sdpa"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128], help="grid sides (default 32 64 128)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; medians are shown (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--case", nargs=2, metavar=("SIZE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        result = run_case(int(args.case[0]), args.case[1], args.batch, args.channels, args.repeats)
        print(json.dumps(result))
        return 0
    print(header("Position attention: naive vs memory-efficient (CPU)"))
    results = {}
    for size in args.sizes:
        for implementation in IMPLEMENTATIONS:
            print(f"running {size}^2 {implementation} ...", file=sys.stderr, flush=True)
            results[(size, implementation)] = _in_subprocess(args, size, implementation)
    print(f"\nbatch {args.batch}, {args.channels} channels, medians of {args.repeats} rounds\n")
    print(table(args, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
