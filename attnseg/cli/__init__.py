"""The ``attnseg`` command. Each verb is a module of this package (``attnseg/cli/predict.py`` is ``attnseg
predict``) that holds its parser, ``add_parser(verbs)``, beside its command, ``run(args)``; a verb with actions
is a package of them (``attnseg/cli/dataset/``). A command parses nothing itself and calls the library, which it
imports inside ``run`` so that ``attnseg --help`` starts without torch. A new verb is a new module, named in
``VERBS``. Errors a user can cause print one line and exit with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from attnseg import __version__
from attnseg.cli import dataset, demo, evaluate, export, models, predict, profile, report, train, visualize
from attnseg.errors import AttnsegError

# in the order `attnseg --help` lists them
VERBS = (demo, dataset, train, predict, evaluate, export, visualize, report, models, profile)

EPILOG = """\
the workflow, one verb per step:
  attnseg dataset prepare mni152-tissue data/mni152     # or bring your own nnU-Net / Decathlon folder
  attnseg dataset check data/mni152                     # every file, label and geometry checked
  attnseg train --dataset data/mni152 --output runs/mni --epochs 24
  attnseg predict -m runs/mni -i data/mni152/imagesTr -o predictions
  attnseg evaluate predictions data/mni152              # Dice, HD95, ... -> summary.json
  attnseg export -m runs/mni --format onnx              # + parity check and a JSON sidecar
  attnseg visualize -m runs/mni -i scan.nii.gz -o attention   # where the model looks
  attnseg report runs/mni                               # one HTML page with everything
or all of it at once on the built-in brain dataset: attnseg demo

  attnseg models --spatial-dims 3 --in-channels 1 --classes 4 --feature-scale 4

Run `attnseg VERB --help` for the options of each verb.
"""


def build_parser() -> argparse.ArgumentParser:
    """The program's own options, then every verb's parser, each from its module."""
    parser = argparse.ArgumentParser(
        prog="attnseg",
        description="Attention models for medical image segmentation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"attnseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()  # the command's start: `train --time-budget` counts from here, torch's import included
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started = started
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
