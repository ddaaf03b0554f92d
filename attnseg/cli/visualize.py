"""``attnseg visualize -m MODEL -i IMAGE -o OUT``: where a trained model looks on one scan (attention maps drawn
over it, optionally as NIfTI volumes on its grid)."""

from __future__ import annotations

import argparse

from attnseg.cli.options import Verbs

EPILOG = """what is drawn:
  Attention U-Net   every gate's coefficients (one panel per gated level and head), resized to the
                    image, one row per slice, one colour bar; the first panel outlines the prediction
  ms_guided         one picture per slice: per scale the position, channel and combined (A_s)
                    attention maps of every refinement step and the scale's prediction, then the
                    average of the scales (the network's output)
  Slices are shown in radiological convention, pixels shaped by the voxel spacing.
outputs (in OUT):
  CASE_attention.png              (Attention U-Net; 2-D images)
  CASE_attention_sliceNNN.png     (ms_guided, one per slice)
  with --nifti: CASE_<map>.nii.gz for every map and CASE_prediction.nii.gz (ms_guided: also
  CASE_scaleN_prediction.nii.gz), each with the input's shape and affine: open them over the scan
examples:
  attnseg visualize -m demo_output/model -i demo_output/data/mni152-tissue/imagesTr/mni152_z076_0000.nii.gz -o attention
  attnseg visualize -m runs/ct -i scan.nii.gz -o attention --slices 40 52 64 --nifti
  attnseg visualize -m runs/ct -i dicom/series_001 -o attention --axis 1 --count 4
"""


def add_parser(verbs: Verbs) -> None:
    visualize = verbs.add_parser(
        "visualize",
        help="draw where a trained model looks on a scan (attention maps), optionally as NIfTI volumes",
        description=(
            "Run the model of MODEL_DIR on one scan as `attnseg predict` does (the model's preprocessing applied and "
            "undone) and draw its attention over the scan: the Attention U-Net's gate coefficients, or the "
            "multi-scale guided network's position, channel and combined attention maps with its per-scale "
            "predictions. Every map is put back on the scan's own grid by the predictor's inverse, so it lines up "
            "with the scan and its mask. 2D and 3D models."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    visualize.add_argument(
        "-m", "--model", required=True, metavar="MODEL_DIR", help="model directory written by `attnseg train`"
    )
    visualize.add_argument(
        "-i",
        "--input",
        nargs="+",
        required=True,
        metavar="IMAGE",
        help="the scan: an image file, a DICOM folder, or its channel files",
    )
    visualize.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the pictures (and volumes)")
    visualize.add_argument(
        "--slices",
        type=int,
        nargs="+",
        metavar="N",
        help="slice indices along --axis (default: those with most predicted foreground)",
    )
    visualize.add_argument(
        "--count",
        type=int,
        default=3,
        metavar="N",
        help="how many slices to choose when --slices is not given (default 3)",
    )
    visualize.add_argument(
        "--axis", type=int, choices=(0, 1, 2), help="voxel axis to cut (default: the axial one, from the scan's header)"
    )
    visualize.add_argument(
        "--nifti", action="store_true", help="also write every map as a NIfTI volume on the scan's grid"
    )
    visualize.add_argument("--batch-size", type=int, default=None, help="slices or windows per forward pass")
    visualize.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: auto)")
    visualize.add_argument("--overwrite", action="store_true", help="replace existing pictures and volumes")
    visualize.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnseg.visualize.scan import visualize_scan

    result = visualize_scan(
        args.model,
        args.input,
        args.output,
        slices=args.slices,
        axis=args.axis,
        count=args.count,
        nifti=args.nifti,
        overwrite=args.overwrite,
        device=args.device,
        batch_size=args.batch_size,
    )
    where = "the whole image" if result.axis is None else f"{result.view} slices {result.slices}"
    print(f"{len(result.maps)} attention map(s) of {result.case_id} on {where}:")
    for path in [*result.figures, *result.volumes]:
        print(f"  {path}")
    return 0
