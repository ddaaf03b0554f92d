"""Time and peak memory of one training step of the multi-scale guided attention network on the CPU.

Cases: 256² and 512² inputs, batch 2, naive position attention (the N x N map is stored) against the
memory-efficient one (``scaled_dot_product_attention``), plus naive attention with 2x key/value pooling.
One training step = zero_grad, forward, ``GuidedAttentionLoss``, backward, Adam step. A size written
``DxHxW`` is a volume and runs the 3D network (issue 14's target: 96 x 96 x 64, batch 1, within 8 GiB):

    .venv/bin/python benchmarks/ms_guided_memory.py
    .venv/bin/python benchmarks/ms_guided_memory.py --sizes 96x96x64 --batch 1

Each case runs in a fresh subprocess, because peak RSS is per process and the allocator keeps what it
freed. A case whose pre-flight estimate exceeds ``--limit-gib`` is refused before it allocates anything
(the check the network runs with ``memory_limit_gib``); the table then shows the estimate. Columns:
``estimate`` is the pre-flight estimate (parameters + peak of live tensors, no optimiser state), ``step
peak`` the growth of the process's peak RSS during the first step (Adam state included), ``RSS peak``
the whole process's peak resident memory (interpreter and libraries included), ``time`` the median of
the timed steps after that first one. Ratios are naive / sdpa at the same size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from attnseg.losses import GuidedAttentionLoss
from attnseg.networks import MemoryBudgetError, build_network
from attnseg.profiling import PeakMemory, time_call

GIB = 2**30
CASES = (("naive", 1), ("sdpa", 1), ("naive", 2))
CLASSES = 5


def _process_peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def parse_size(text: str) -> tuple[int, ...]:
    """``256`` -> (256, 256); ``96x96x64`` -> (96, 96, 64)."""
    parts = tuple(int(p) for p in text.lower().split("x"))
    return parts * 2 if len(parts) == 1 else parts


def size_label(text: str) -> str:
    size = parse_size(text)
    return f"{size[0]}²" if len(size) == 2 and size[0] == size[1] else " x ".join(map(str, size))


def run_case(
    network: str, size: str, batch: int, implementation: str, kv_pool: int, limit: float, repeats: int
) -> dict:
    """One case, in this process: a dict of what was measured."""
    torch.manual_seed(0)
    spatial = parse_size(size)
    model = build_network(
        network,
        spatial_dims=len(spatial),
        in_channels=1,
        out_channels=CLASSES,
        position_attention=implementation,
        kv_pool=kv_pool,
        memory_limit_gib=limit,
    ).train()
    shape = (batch, 1, *spatial)
    try:
        estimate = model.check_memory(shape)
    except MemoryBudgetError:
        (estimate,) = model._checked.values()
        return {"refused": True, "estimate_gib": estimate.total_gib}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = GuidedAttentionLoss()
    x = torch.randn(shape)
    target = torch.randint(0, CLASSES, (batch, *spatial))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        optimizer.step()

    with PeakMemory() as peak:
        step()
    seconds = time_call(step, repeats=repeats, warmup=0)
    return {
        "refused": False,
        "estimate_gib": estimate.total_gib,
        "step_peak_gib": (peak.peak_bytes or 0) / GIB,
        "rss_peak_gib": _process_peak_bytes() / GIB,
        "seconds": seconds,
    }


def _in_subprocess(args: argparse.Namespace, size: str, implementation: str, kv_pool: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--case",
        size,
        implementation,
        str(kv_pool),
        "--network",
        args.network,
        "--batch",
        str(args.batch),
        "--limit-gib",
        str(args.limit_gib),
        "--repeats",
        str(args.repeats),
        *(["--threads", str(args.threads)] if args.threads else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(args: argparse.Namespace, results: dict[tuple[str, str, int], dict]) -> str:
    lines = [
        "| input | position attention | estimate | step peak | RSS peak | time / step "
        "| memory vs sdpa | time vs sdpa |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (size, implementation, kv_pool), r in results.items():
        label = implementation + (f", kv_pool={kv_pool}" if kv_pool > 1 else "")
        base = results.get((size, "sdpa", 1), {})
        shown = size_label(size)
        if "error" in r:
            lines.append(f"| {shown} | {label} | failed: {r['error']} | | | | | |")
            continue
        if r["refused"]:
            ratio = f"x{r['estimate_gib'] / base['estimate_gib']:.1f} (estimates)" if base.get("estimate_gib") else ""
            lines.append(
                f"| {shown} | {label} | {r['estimate_gib']:.2f} GiB | refused before allocating "
                f"(> {args.limit_gib:g} GiB limit) | | | {ratio} | |"
            )
            continue
        memory = time = ""
        if base and not base.get("refused") and "error" not in base:
            memory = f"x{r['step_peak_gib'] / base['step_peak_gib']:.2f}"
            time = f"x{r['seconds'] / base['seconds']:.2f}"
        lines.append(
            f"| {shown} | {label} | {r['estimate_gib']:.2f} GiB | {r['step_peak_gib']:.2f} GiB | "
            f"{r['rss_peak_gib']:.2f} GiB | {r['seconds']:.1f} s | {memory} | {time} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", default="ms_guided", help="a registered network (default: ms_guided)")
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["256", "512"],
        help="2D square sizes (256) or volumes (96x96x64) for the 3D network",
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--limit-gib", type=float, default=12.0, help="refuse cases estimated above this")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps after the first (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--case", nargs=3, metavar=("SIZE", "IMPL", "KV_POOL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        size, implementation, kv_pool = args.case[0], args.case[1], int(args.case[2])
        result = run_case(args.network, size, args.batch, implementation, kv_pool, args.limit_gib, args.repeats)
        print(json.dumps(result))
        return 0

    print(
        f"{args.network}, one training step (forward, loss, backward, Adam), batch {args.batch}, "
        f"{CLASSES} classes, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}\n"
    )
    results: dict[tuple[str, str, int], dict] = {}
    for size in args.sizes:
        for implementation, kv_pool in CASES:
            print(f"running {size_label(size)} {implementation} kv_pool={kv_pool} ...", file=sys.stderr, flush=True)
            results[(size, implementation, kv_pool)] = _in_subprocess(args, size, implementation, kv_pool)
    print(_table(args, results))
    for target_size in ("512", "96x96x64"):
        target = results.get((target_size, "sdpa", 1))
        if target and "rss_peak_gib" in target:
            peak = target["rss_peak_gib"]
            verdict = "met" if peak <= 8 else "NOT met"
            print(
                f"\ntarget ({size_label(target_size)}, batch {args.batch}, sdpa, RSS peak <= 8 GiB): "
                f"{verdict} ({peak:.2f} GiB)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
