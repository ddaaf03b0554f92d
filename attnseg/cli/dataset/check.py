"""``attnseg dataset check PATH``: read every case once, summarise the dataset and name every problem."""

from __future__ import annotations

import argparse
import json

from attnseg.cli.options import Verbs


def add_parser(actions: Verbs) -> None:
    check = actions.add_parser(
        "check",
        help="validate a dataset and summarise it",
        description=(
            "Read every case once and report: every image has a label; label shape and geometry (spacing, "
            "origin, direction) match the image; label values are among the labels declared in dataset.json; "
            "intensities are finite; every case has the declared channels, one 3-D file per channel in nnU-Net "
            "format (_0000, _0001, ...); files are readable (truncated or corrupt gzip is caught). Prints a "
            "summary (cases, spacings, sizes, intensity statistics, class frequencies), then one line per "
            "problem naming the file. Exit status: 0 no errors (warnings allowed), 1 errors found, 2 not a "
            "dataset at all."
        ),
        epilog=(
            "layouts recognised:\n"
            "  nnU-Net v2 raw  dataset.json, imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz, imagesTs/\n"
            "  Decathlon       dataset.json with 'training': [{'image': ..., 'label': ...}], 4-D multi-modal NIfTI\n"
            "  paired          images/CASE.nrrd + labels/CASE.nrrd (or CASE_seg, _label, _mask, _gt)\n"
            "example: attnseg dataset check data/mni152 --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("path", help="the dataset folder (or its dataset.json)")
    check.add_argument("--max-cases", type=int, default=None, help="check only the first N training cases")
    check.add_argument("--json", action="store_true", help="machine-readable summary and problems")
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnseg.data.check import check_dataset

    report = check_dataset(args.path, max_cases=args.max_cases)
    if args.json:
        summary = report.summary()
        summary["problems"] = [{"level": p.level, "path": p.path, "message": p.message} for p in report.problems]
        print(json.dumps(summary, indent=2))
    else:
        print(report.format())
    return 0 if report.ok else 1
