"""``attnseg dataset margin SOURCE OUT --mm MM``: a copy of a dataset with its labels grown or shrunk."""

from __future__ import annotations

import argparse
import sys

from attnseg.cli.options import Verbs


def add_parser(actions: Verbs) -> None:
    margin = actions.add_parser(
        "margin",
        help="copy a dataset with its labels grown or shrunk by a margin in mm (another label convention)",
        description=(
            "Write a copy of a dataset whose labels are grown (MM > 0) or shrunk (MM < 0) by MM millimetres, on\n"
            "each label's own voxel grid and spacing.\n\n"
            "Use it when your masks follow another convention than the masks you will compare with: FSL BET's\n"
            "brain mask hugs the cortex, where ITK's reference, SynthStrip's and deepbet's masks follow the inner\n"
            "skull about 3 mm further out, and a network learns the convention it is trained on. `attnseg\n"
            "evaluate` measures how far apart two conventions are (BoundaryOffset, mm).\n\n"
            "Growing fills background only: a background voxel takes its nearest class, other classes are never\n"
            "overwritten. Shrinking turns a class's voxels within MM of the background into background; borders\n"
            "between classes stay, unless --into names the classes that count as background for this (a tumour\n"
            "inside a liver: --labels tumour --into liver grows it into the liver, or gives its rim back to the\n"
            "liver). Only the training cases' labels move; test cases are copied as they are.\n"
            "Everything else is copied (--link-images: hard-linked), dataset.json and splits.json included, and\n"
            "OUT/label_margin.json records the margin and how many voxels each label changed. See docs/data.md\n"
            "and docs/generalisation.md."
        ),
        epilog=(
            "examples:\n"
            "  attnseg dataset margin data/Heads data/Heads-3mm --mm 3            # every foreground label\n"
            "  attnseg dataset margin data/Liver data/Liver-tumour-3mm --mm 3 --labels tumour --into liver\n"
            "  attnseg train --dataset data/Heads-3mm --output runs/heads --fold all --time-budget 5m"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    margin.add_argument("source", metavar="SOURCE", help="the dataset folder to copy (left untouched)")
    margin.add_argument("out", metavar="OUT", help="the new dataset folder (must not exist, unless --overwrite)")
    margin.add_argument("--mm", type=float, required=True, help="millimetres to grow (> 0) or shrink (< 0) by")
    margin.add_argument(
        "--labels", nargs="+", metavar="NAME", help="only these labels (dataset.json names); default: every one"
    )
    margin.add_argument(
        "--into",
        nargs="+",
        default=[],
        metavar="NAME",
        help="with --labels: labels the chosen ones grow into and give their rim to when shrunk, as they do the "
        "background (default: the background only)",
    )
    margin.add_argument("--overwrite", action="store_true", help="replace OUT if it holds a dataset")
    margin.add_argument(
        "--link-images",
        action="store_true",
        help="hard-link the images instead of copying them: no extra space, but a program that rewrites an image "
        "of OUT in place then rewrites SOURCE's too",
    )
    margin.add_argument("--no-progress", action="store_true", help="no progress bar")
    margin.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnseg.data.margin import MARGIN_RECORD, write_with_margin
    from attnseg.fileio import read_json

    out = write_with_margin(
        args.source,
        args.out,
        args.mm,
        label_names=args.labels,
        into_names=args.into,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        link_images=args.link_images,
    )
    verb = "grown" if args.mm > 0 else "shrunk"
    record = out / MARGIN_RECORD
    print(f"wrote {out}: labels {verb} by {abs(args.mm):g} mm ({record}); next: attnseg dataset check {out}")
    if not any(read_json(record)["voxels_changed"].values()):
        touch = "neither the background nor the --into labels" if args.into else "no background, only other labels"
        hint = "" if args.into else "; --into NAME moves their borders with those labels"
        print(
            f"warning: no voxel changed: the labels moved are absent, touch {touch}, or the margin is shorter than "
            f"the distance between voxel centres{hint}",
            file=sys.stderr,
        )
    return 0
