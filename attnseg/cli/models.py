"""``attnseg models``: every registered network with its parameter count for one configuration (and, with
``--flops``, the arithmetic of one forward pass at ``--size``)."""

from __future__ import annotations

import argparse
import json

from attnseg.cli.options import Verbs, add_network_options, network_config


def add_parser(verbs: Verbs) -> None:
    models = verbs.add_parser(
        "models",
        help="list every network with its parameter count",
        description="List every registered network and its parameter count for one configuration.",
        epilog=(
            "examples:\n  attnseg models --spatial-dims 3 --in-channels 1 --classes 4 --feature-scale 4 --json\n"
            "  attnseg models --flops --size 96 96       # + GFLOP per image; step times: attnseg profile NAME --train"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_network_options(models)
    models.add_argument(
        "--flops",
        action="store_true",
        help="also count the GFLOP of one forward pass of one image of --size (on the meta device: no arithmetic)",
    )
    models.add_argument("--size", type=int, nargs="+", default=None, help="with --flops: spatial size (256 256)")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from attnseg.errors import ConfigError
    from attnseg.networks.registry import NETWORKS
    from attnseg.networks.utils import count_parameters
    from attnseg.profiling import count_gflops

    size = args.size or [256] * args.spatial_dims
    if len(size) != args.spatial_dims:
        raise ConfigError(f"--size needs {args.spatial_dims} numbers for {args.spatial_dims}D networks")
    rows = []
    for spec in NETWORKS.values():
        row = {"name": spec.name, "description": spec.description, "parameters": None}
        if args.spatial_dims in spec.spatial_dims:
            with torch.device("meta"):  # counts parameters without allocating them
                model = spec.cls(**{**spec.preset, **network_config(args, spec)})
            row["parameters"] = count_parameters(model)
            if args.flops:
                row["gflops"] = count_gflops(model.eval(), (1, args.in_channels, *size))
        rows.append(row)
    if args.json:
        config = {k: getattr(args, k) for k in ("spatial_dims", "in_channels", "classes", "feature_scale")}
        if args.flops:
            config["size"] = size
        print(json.dumps({"config": config, "networks": rows}, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(
        f"networks for spatial_dims={args.spatial_dims}, in_channels={args.in_channels}, "
        f"classes={args.classes}, feature_scale={args.feature_scale:g}\n"
    )
    flops_header = f"  {'GFLOP':>8}" if args.flops else ""
    if args.flops:
        print(f"GFLOP: one forward pass of one {' x '.join(map(str, size))} image (a multiply-add counts 2)\n")
    print(f"{'name':<{width}}  {'parameters':>12}{flops_header}  description")
    for r in rows:
        count = f"{r['parameters']:,}" if r["parameters"] is not None else f"{args.spatial_dims}D n/a"
        flops = f"  {r['gflops']:>8.2f}" if "gflops" in r else (f"  {'n/a':>8}" if args.flops else "")
        print(f"{r['name']:<{width}}  {count:>12}{flops}  {r['description']}")
    return 0
