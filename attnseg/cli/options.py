"""What more than one verb shares: the network options of ``attnseg models`` and ``attnseg profile`` and the
configuration they give a network. Not a verb itself."""

from __future__ import annotations

import argparse

# the object `parser.add_subparsers()` returns, that each verb adds its parser to
Verbs = argparse._SubParsersAction


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """The configuration of a network: what ``attnseg models`` counts for and ``attnseg profile`` builds."""
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=2, help="2D or 3D (default: 2)")
    parser.add_argument("--in-channels", type=int, default=1, help="input channels / modalities (default: 1)")
    parser.add_argument("--classes", type=int, default=2, help="output classes incl. background (default: 2)")
    parser.add_argument(
        "--feature-scale",
        type=float,
        default=4.0,
        help="U-Net family: divides the widths 64..1024 (default: 4, the paper's)",
    )


def network_config(args: argparse.Namespace, spec) -> dict:
    """The common options that this network takes (the MS network has no feature scale, ...)."""
    config = {
        "spatial_dims": args.spatial_dims,
        "in_channels": args.in_channels,
        "out_channels": args.classes,
        "feature_scale": args.feature_scale,
    }
    return {k: v for k, v in config.items() if spec.accepts(k)}
