"""``attnseg models``: every registered network with its parameter count for one configuration."""

from __future__ import annotations

import argparse
import json

from attnseg.cli.options import Verbs, add_network_options, network_config


def add_parser(verbs: Verbs) -> None:
    models = verbs.add_parser(
        "models",
        help="list every network with its parameter count",
        description="List every registered network and its parameter count for one configuration.",
        epilog="example: attnseg models --spatial-dims 3 --in-channels 1 --classes 4 --feature-scale 4 --json",
    )
    add_network_options(models)
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from attnseg.networks.registry import NETWORKS
    from attnseg.networks.utils import count_parameters

    rows = []
    for spec in NETWORKS.values():
        row = {"name": spec.name, "description": spec.description, "parameters": None}
        if args.spatial_dims in spec.spatial_dims:
            with torch.device("meta"):  # counts parameters without allocating them
                model = spec.cls(**{**spec.preset, **network_config(args, spec)})
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
