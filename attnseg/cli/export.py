"""``attnseg export -m MODEL --format FORMAT``: the network of a model directory as ONNX or TorchScript, checked
against the eager model, with a JSON sidecar saying what a deployment must reproduce."""

from __future__ import annotations

import argparse

from attnseg.cli.options import Verbs


def add_parser(verbs: Verbs) -> None:
    export = verbs.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript, with a parity check and a JSON sidecar",
        description=(
            "Export the network of a model directory (eval mode, any batch size, any spatial size: the exported "
            "graph pads to the network's multiple and crops back), run it in onnxruntime or TorchScript on several "
            "inputs and compare with the eager model (tolerance 1e-4), and write MODEL.json beside it with what a "
            "deployment must reproduce: labels, voxel size, normalisation, slice or patch size, slicing axis, "
            "input and output layout, and the parity result. Exit status 1 if parity fails. --format monai-bundle "
            "writes a MONAI Bundle folder instead (docs/export.md): attnseg's preprocessing and post-processing as "
            "MONAI transforms around the TorchScript network, the model card as its docs/README.md."
        ),
        epilog=(
            "examples:\n"
            "  attnseg export -m demo_output/model --format onnx              # demo_output/model/model.onnx(.json)\n"
            "  attnseg export -m runs/ct --format torchscript -o deploy/ct.pt\n"
            "  attnseg export -m demo_output/model --format monai-bundle -o demo_bundle   # runs without attnseg:\n"
            "  cd demo_bundle && python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\\n"
            "      --dataset_dir IN --output_dir OUT"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("-m", "--model", required=True, help="model directory written by `attnseg train`")
    export.add_argument(
        "--format",
        required=True,
        choices=("onnx", "torchscript", "monai-bundle"),
        help="export format; monai-bundle: a folder that `python -m monai.bundle run` executes without attnseg",
    )
    export.add_argument(
        "-o",
        "--output",
        help="file (folder for monai-bundle) to write (default: MODEL_DIR/model.onnx, model.pt, bundle)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace existing files")
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnseg.export import export_model_dir

    if args.format == "monai-bundle":
        from pathlib import Path

        from attnseg.bundle import export_bundle

        output = Path(args.output) if args.output else Path(args.model) / "bundle"
        print(f"wrote {export_bundle(args.model, output, overwrite=args.overwrite)} (a MONAI Bundle)")
        return 0
    result = export_model_dir(args.model, args.format, args.output, overwrite=args.overwrite)
    parity = result.parity
    verdict = "passes" if parity.passed else "FAILS"
    print(
        f"wrote {result.model_file} and {result.sidecar_file}; parity with the eager model {verdict}: "
        f"max |difference| {parity.max_abs_diff:.2e} (tolerance {parity.tolerance:.0e}) on inputs "
        + ", ".join(str(tuple(s)) for s in parity.input_shapes)
    )
    return 0 if parity.passed else 1
