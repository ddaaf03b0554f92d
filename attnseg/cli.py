"""The ``attnseg`` command: one small function per verb; each parses nothing itself and calls the
library. Errors a user can cause print one line and exit with status 2 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from attnseg import __version__
from attnseg.errors import AttnsegError, ConfigError

EPILOG = """\
examples:
  attnseg models --spatial-dims 3 --in-channels 1 --classes 4 --feature-scale 4
  attnseg profile attention_unet --spatial-dims 2 --size 256 256
  attnseg demo

Run `attnseg VERB --help` for the options of each verb.
"""


def _add_network_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=2, help="2D or 3D (default: 2)")
    parser.add_argument("--in-channels", type=int, default=1, help="input channels / modalities (default: 1)")
    parser.add_argument("--classes", type=int, default=2, help="output classes incl. background (default: 2)")
    parser.add_argument(
        "--feature-scale",
        type=float,
        default=4.0,
        help="U-Net family: divides the widths 64..1024 (default: 4, the paper's)",
    )


def _network_config(args: argparse.Namespace, spec) -> dict:
    """The common options that this network takes (the MS network has no feature scale, ...)."""
    config = {
        "spatial_dims": args.spatial_dims,
        "in_channels": args.in_channels,
        "out_channels": args.classes,
        "feature_scale": args.feature_scale,
    }
    return {k: v for k, v in config.items() if spec.accepts(k)}


def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from attnseg.networks.registry import NETWORKS
    from attnseg.networks.utils import count_parameters

    rows = []
    for spec in NETWORKS.values():
        row = {"name": spec.name, "description": spec.description, "parameters": None}
        if args.spatial_dims in spec.spatial_dims:
            with torch.device("meta"):  # counts parameters without allocating them
                model = spec.cls(**{**spec.preset, **_network_config(args, spec)})
            row["parameters"] = count_parameters(model)
        rows.append(row)
    if args.json:
        config = {k: getattr(args, k) for k in ("spatial_dims", "in_channels", "classes", "feature_scale")}
        print(json.dumps({"config": config, "networks": rows}, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(
        f"networks for spatial_dims={args.spatial_dims}, in_channels={args.in_channels}, "
        f"classes={args.classes}, feature_scale={args.feature_scale:g}\n"
    )
    print(f"{'name':<{width}}  {'parameters':>12}  description")
    for r in rows:
        count = f"{r['parameters']:,}" if r["parameters"] is not None else f"{args.spatial_dims}D n/a"
        print(f"{r['name']:<{width}}  {count:>12}  {r['description']}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from attnseg.networks.registry import build_network, get_spec
    from attnseg.profiling import profile_forward

    spec = get_spec(args.network)
    if len(args.size) != args.spatial_dims:
        raise ConfigError(f"--size needs {args.spatial_dims} numbers for a {args.spatial_dims}D network")
    model = build_network(args.network, **_network_config(args, spec))
    shape = (args.batch, args.in_channels, *args.size)
    p = profile_forward(model, shape, device=args.device, repeats=args.repeats)
    if args.json:
        print(json.dumps({"network": args.network, "input_shape": shape, **p.as_dict()}, indent=2))
    else:
        peak = "n/a" if p.peak_mib is None else f"{p.peak_mib:,.0f} MiB"
        print(
            f"{args.network} on {tuple(shape)} ({args.device}): {p.parameters:,} parameters, "
            f"{p.gflops:,.1f} GFLOP, {p.seconds:.3f} s per forward, peak +{peak}"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from attnseg.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnseg",
        description="Attention models for medical image segmentation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"attnseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    models = verbs.add_parser(
        "models",
        help="list every network with its parameter count",
        description="List every registered network and its parameter count for one configuration.",
        epilog="example: attnseg models --spatial-dims 3 --in-channels 1 --classes 4 --feature-scale 4 --json",
    )
    _add_network_options(models)
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=cmd_models)

    profile = verbs.add_parser(
        "profile",
        help="parameters, FLOPs, time and peak memory of one forward pass",
        description="Build one network and measure an inference forward pass on random input.",
        epilog="example: attnseg profile attention_unet --spatial-dims 3 --size 160 160 96",
    )
    profile.add_argument("network", help="a name from `attnseg models`")
    _add_network_options(profile)
    profile.add_argument("--size", type=int, nargs="+", default=[256, 256], help="spatial size (default: 256 256)")
    profile.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    profile.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    profile.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is shown (default: 3)")
    profile.add_argument("--json", action="store_true", help="machine-readable output")
    profile.set_defaults(func=cmd_profile)

    demo = verbs.add_parser(
        "demo",
        help="the main job: build each network and run it on real-sized inputs",
        description=(
            "Build every Attention U-Net variant and the U-Net baseline in 2D (2 x 1 x 256 x 256) and 3D "
            "(1 x 1 x 160 x 160 x 96, the paper's inference size), run a forward pass, and print output "
            "shapes, parameter counts and timings. Takes about a minute on 2 CPU cores."
        ),
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except AttnsegError as error:
        if args.debug:
            raise
        print(f"attnseg: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
