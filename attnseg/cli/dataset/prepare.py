"""``attnseg dataset prepare NAME OUT``: write a built-in real dataset in nnU-Net format."""

from __future__ import annotations

import argparse

from attnseg.cli.options import Verbs


def add_parser(actions: Verbs) -> None:
    from attnseg.data.builtin import BUILTIN  # the names and titles of the datasets, for the choices and epilog

    names = "\n".join(f"  {name:<14} {spec.title}\n  {'':<14} {spec.description}" for name, spec in BUILTIN.items())
    prepare = actions.add_parser(
        "prepare",
        help="write a built-in real dataset (shipped inside an installed package) in nnU-Net format",
        description=(
            "Write a built-in dataset, made from a real volume shipped inside a registry package (nothing is "
            "downloaded), as an nnU-Net v2 raw dataset with dataset.json, splits.json (training slabs kept "
            "apart from validation slabs by a gap of unused slices) and a README giving source and licence. "
            "These show the pipeline on real anatomy; they are not clinical benchmarks. The packages come "
            "with `pip install 'attnseg[data]'` (make demo and make test install them)."
        ),
        epilog=f"datasets:\n{names}\nexample: attnseg dataset prepare ctchest data/ctchest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("name", choices=sorted(BUILTIN), metavar="NAME", help="one of: " + ", ".join(BUILTIN))
    prepare.add_argument("out", metavar="OUT", help="output folder (must not exist, unless --overwrite)")
    prepare.add_argument("--overwrite", action="store_true", help="replace OUT if it holds a dataset")
    prepare.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnseg.data.builtin import prepare_builtin

    out = prepare_builtin(args.name, args.out, overwrite=args.overwrite)
    print(f"wrote {args.name} to {out}; next: attnseg dataset check {out}")
    return 0
