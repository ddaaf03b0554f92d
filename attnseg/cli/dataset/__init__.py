"""``attnseg dataset ACTION``: work with a dataset folder on disk. A verb with actions is a package, one
module per action (``check.py`` is ``attnseg dataset check``), as the verbs are modules of ``attnseg.cli``."""

from __future__ import annotations

import argparse

from attnseg.cli.dataset import check, margin, prepare
from attnseg.cli.options import Verbs

# in the order `attnseg dataset --help` lists them
ACTIONS = (check, prepare, margin)


def add_parser(verbs: Verbs) -> None:
    dataset = verbs.add_parser(
        "dataset",
        help="check a dataset folder, prepare a built-in real dataset, or grow/shrink its labels",
        description="Work with segmentation datasets on disk (nnU-Net v2 raw, Medical Segmentation Decathlon, "
        "or paired images/ + labels/ folders).",
        epilog="examples:\n  attnseg dataset prepare mni152-tissue data/mni152\n  attnseg dataset check data/mni152",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dataset.set_defaults(func=run, print_help=dataset.print_help)  # an action's own func replaces run
    actions = dataset.add_subparsers(dest="action", metavar="ACTION")
    for action in ACTIONS:
        action.add_parser(actions)


def run(args: argparse.Namespace) -> int:
    """``attnseg dataset`` with no action lists the actions, as ``attnseg`` alone lists the verbs."""
    args.print_help()
    return 0
