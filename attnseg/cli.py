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
  attnseg dataset prepare mni152-tissue data/mni152 && attnseg dataset check data/mni152

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


def cmd_dataset_check(args: argparse.Namespace) -> int:
    from attnseg.data.check import check_dataset

    report = check_dataset(args.path, max_cases=args.max_cases)
    if args.json:
        summary = report.summary()
        summary["problems"] = [{"level": p.level, "path": p.path, "message": p.message} for p in report.problems]
        print(json.dumps(summary, indent=2))
    else:
        print(report.format())
    return 0 if report.ok else 1


def cmd_dataset_prepare(args: argparse.Namespace) -> int:
    from attnseg.data.builtin import prepare_builtin

    out = prepare_builtin(args.name, args.out, overwrite=args.overwrite)
    print(f"wrote {args.name} to {out}; next: attnseg dataset check {out}")
    return 0


def _add_dataset_verbs(verbs: argparse._SubParsersAction) -> None:
    from attnseg.data.builtin import BUILTIN

    dataset = verbs.add_parser(
        "dataset",
        help="check a dataset folder, or prepare a built-in real dataset",
        description="Work with segmentation datasets on disk (nnU-Net v2 raw, Medical Segmentation Decathlon, "
        "or paired images/ + labels/ folders).",
        epilog="examples:\n  attnseg dataset prepare mni152-tissue data/mni152\n  attnseg dataset check data/mni152",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dataset.set_defaults(func=lambda _args: dataset.print_help() or 0)
    actions = dataset.add_subparsers(dest="action", metavar="ACTION")

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
    check.set_defaults(func=cmd_dataset_check)

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
    prepare.set_defaults(func=cmd_dataset_prepare)


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
    _add_dataset_verbs(verbs)
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
