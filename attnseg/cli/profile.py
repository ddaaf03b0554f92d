"""``attnseg profile NETWORK``: parameters, FLOPs, time and peak memory of one network on random input, as
``attnseg predict`` runs it (and, with ``--train``, a training step as ``attnseg train`` runs it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnseg.cli.options import Verbs, add_network_options, network_config
from attnseg.errors import ConfigError


def add_parser(verbs: Verbs) -> None:
    profile = verbs.add_parser(
        "profile",
        help="parameters, FLOPs, time and peak memory of a forward pass (and a training step with --train)",
        description=(
            "Build one network and time it on random input. The forward pass runs as `attnseg predict` runs "
            "a model: inference mode, channels-last layout, fp16 autocast on CUDA. With --train, also a full "
            "training step exactly as `attnseg train` runs it: the loss it builds for the network (deep "
            "supervision, or the guided-attention loss), the optimizer and gradient clipping, and the memory "
            "layout and mixed precision it chooses (training.layout and training.amp; with auto, the fastest "
            "candidate, timed on this batch); the forward pass then runs under the same choice. --config and "
            "--set take the same training configuration as `attnseg train`. Times are medians; peak memory is "
            "the growth of the allocator's peak (CUDA) or of the process's resident set (CPU)."
        ),
        epilog=(
            "examples:\n"
            "  attnseg profile attention_unet --spatial-dims 3 --size 160 160 96\n"
            "  attnseg profile attention_unet --size 256 256 --batch 4 --train --json\n"
            "  attnseg profile attention_unet --train --set network.aux_outputs=true --set training.amp=off\n"
            "  attnseg profile unet --spatial-dims 3 --size 96 96 96 --train --device cuda"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    profile.add_argument("network", help="a name from `attnseg models`")
    add_network_options(profile)
    profile.add_argument("--size", type=int, nargs="+", default=[256, 256], help="spatial size (default: 256 256)")
    profile.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    profile.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    profile.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is shown (default: 3)")
    profile.add_argument("--train", action="store_true", help="also time a training step as `attnseg train` runs it")
    profile.add_argument("--config", type=Path, help="with --train: a training configuration (YAML)")
    profile.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="with --train: override a configuration key"
    )
    profile.add_argument("--json", action="store_true", help="machine-readable output")
    profile.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnseg.networks.registry import build_network, get_spec
    from attnseg.profiling import profile_forward, profile_training
    from attnseg.training.config import load_config

    spec = get_spec(args.network)
    if len(args.size) != args.spatial_dims:
        raise ConfigError(f"--size needs {args.spatial_dims} numbers for a {args.spatial_dims}D network")
    if (args.config or args.set) and not args.train:
        raise ConfigError("--config and --set describe a training run: add --train")
    config = load_config(args.config, [f"network.name={args.network}", *args.set]) if args.train else None
    extra = dict(config.network.model_extra or {}) if config else {}  # e.g. --set network.aux_outputs=true
    model = build_network(args.network, **{**network_config(args, spec), **extra})
    shape = (args.batch, args.in_channels, *args.size)
    if config is not None:
        p = profile_training(config, model, shape, device=args.device, repeats=args.repeats)
    else:
        p = profile_forward(model, shape, device=args.device, repeats=args.repeats)
    if args.json:
        report = {"network": args.network, "input_shape": shape, "device": args.device, **p.as_dict()}
        print(json.dumps(report, indent=2))
        return 0
    runtime = p.runtime
    print(
        f"{args.network} on {tuple(shape)}, {args.device}, {runtime['layout']} layout, "
        f"{'fp32' if runtime['amp'] == 'off' else runtime['amp'] + ' autocast'} ({runtime['reason']})"
    )
    print(f"  {p.parameters:,} parameters, {p.gflops:,.1f} GFLOP per forward pass")
    print(f"  forward pass   {p.forward_ms:9.1f} ms  (median of {args.repeats}), peak +{_mib_text(p.peak_mib)}")
    if p.train_step_ms is not None:
        peak = _mib_text(p.train_peak_mib)
        print(f"  training step  {p.train_step_ms:9.1f} ms  (median of {args.repeats}), peak +{peak}")
    if runtime.get("step_ms"):
        print("  measured steps: " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in runtime["step_ms"].items()))
    return 0


def _mib_text(mib: float | None) -> str:
    return "n/a" if mib is None else f"{mib:,.0f} MiB"
