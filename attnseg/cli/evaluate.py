"""``attnseg evaluate PRED GT``: compare predicted masks with reference masks, case by case and class by class;
writes the reports (and, with ``--overlays``, pictures)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from attnseg.cli.options import Verbs
from attnseg.errors import ConfigError

if TYPE_CHECKING:
    from attnseg.evaluate import Sides
    from attnseg.metrics import EvaluationReport


def add_parser(verbs: Verbs) -> None:
    evaluate = verbs.add_parser(
        "evaluate",
        help="compare predicted masks with reference masks (Dice, IoU, HD95, ASSD, NSD...)",
        description=(
            "Pair the masks in PRED and GT by case name, check that every case is on both sides with the same "
            "shape and geometry, then compute per case and per class: Dice, IoU, precision, recall, volume "
            "similarity, HD95, ASSD, NSD and the boundary offset (distances in mm, from the files' spacing; in "
            "pixels, labelled px everywhere, for PNG/TIFF pictures that store no pixel size unless --pixel-size "
            "states it; a mix of cases in mm and in pixels is refused, naming them; the offset "
            "is + where the masks lie outside the references, - inside, and a class shifted all round gets a note "
            "naming the margin that would move its training labels). Writes summary.json "
            "(nnU-Net's keys), cases.csv and summary.md, and prints the table (mean +- std per class). Empty masks: "
            "both empty gives Dice 1 and distances 0; one empty gives Dice 0 and NaN distances, flagged. Exit "
            "status 1, with the list of problems and nothing written, when cases are missing, shapes or "
            "geometries disagree (from the files' headers, before any voxel is read), or masks hold values that "
            "are not classes (each file named with its stray values "
            "and their voxel counts): the classes are --labels' or the dataset.json's, else the values the "
            "references hold, all cases together (a class absent from some cases is no problem). Either side may "
            "hold DICOM SEG files (CASE.seg.dcm or CASE.dcm): a SEG is placed by its frames' positions onto the "
            "full grid of the series it was made from (found by SeriesInstanceUID in --source-series folders or "
            "beside the SEG), or of the image file it is compared with, so SEGs that omit empty frames compare "
            "voxel for voxel; two SEGs that both miss frames need their source series. Segments are given the "
            "classes' values by their labels (without --labels or a dataset.json: by segment number)."
        ),
        epilog=(
            "examples:\n"
            "  attnseg evaluate predictions data/mni152            # GT: a dataset folder (its labelsTr/)\n"
            "  attnseg evaluate predictions labels/ --labels dataset.json --nsd-tolerance 2 -o reports/\n"
            "  attnseg evaluate predictions data/mni152 --overlays    # + predictions/overlays/CASE_overlay.png\n"
            "  attnseg evaluate predictions labels/ --overlays --images scans/ -o runs/mni/metrics\n"
            "  attnseg evaluate predictions labels/ --sides --images scans/  # where: top, bottom, front, back...\n"
            "  attnseg evaluate predictions data/ct --num-workers 8     # thousands of cases: 8 processes\n"
            "  attnseg evaluate segs/ labels/ --labels dataset.json     # CASE.seg.dcm vs CASE.nii.gz\n"
            "  attnseg evaluate segs/ ref_segs/ --source-series dicom/  # SEG vs SEG on the scans' grids"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("predictions", metavar="PRED", help="folder of predicted masks (image files or SEGs)")
    evaluate.add_argument(
        "reference", metavar="GT", help="folder of reference masks (image files or SEGs), or a dataset folder"
    )
    evaluate.add_argument("--labels", help="dataset.json or labels.json naming the classes (default: GT's)")
    evaluate.add_argument(
        "--nsd-tolerance",
        type=float,
        default=1.0,
        help="NSD tolerance in mm (default 1); in pixels for pictures that store no pixel size (without --pixel-size)",
    )
    evaluate.add_argument(
        "--pixel-size",
        type=float,
        nargs="+",
        metavar="MM",
        help="mm per pixel of PNG/TIFF pictures that store no pixel size (one value, or X Y): their distances and "
        "the NSD tolerance are then in mm (default: in pixels, labelled px); files that store theirs keep it",
    )
    evaluate.add_argument("-o", "--output", help="folder for the reports (default: PRED)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace existing reports")
    evaluate.add_argument(
        "--num-workers",
        type=int,
        default=0,
        metavar="N",
        help="processes that read and evaluate cases in parallel, same results as serial (default 0: in this "
        "process; each worker starts like one `attnseg`, so it pays from a few dozen cases on)",
    )
    evaluate.add_argument(
        "--overlays",
        action="store_true",
        help="also draw OUTPUT/overlays/CASE_overlay.png: reference and prediction outlines and the errors on the "
        "slices where they disagree most",
    )
    evaluate.add_argument(
        "--sides",
        action="store_true",
        help="also say where the masks fall short of the references or reach beyond them, by side of the patient "
        "(left, right, posterior, anterior, inferior, superior; 3D scans, reoriented to RAS), and which pieces of "
        "the references on axial slices they miss whole: OUTPUT/sides.csv, OUTPUT/pieces_missed.csv and a table; "
        "with scans (--images or GT's dataset), the intensities of the missed voxels",
    )
    evaluate.add_argument(
        "--images",
        metavar="DIR",
        help="scans to draw the overlays on and, with --sides, to read the missed voxels' intensities from (CASE or "
        "CASE_0000 files, DICOM folders; default: GT's dataset)",
    )
    evaluate.add_argument(
        "--source-series",
        action="append",
        default=[],
        metavar="DIR",
        help="DICOM folder or tree holding the series the SEGs were made from, found by their SeriesInstanceUID "
        "(repeat for several; each SEG's own folder is searched too)",
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=run)


def shift_note(name: str, offset: float, assd: float, name_the_label: bool = False, unit: str = "mm") -> str:
    """What a systematic boundary shift of class ``name`` means, and the command that moves training labels
    (``--labels name`` when other classes are not to move); distances in ``unit`` (a picture's ``--mm`` margin
    is in pixels too, its spacing being 1 x 1)."""
    where = "inside" if offset < 0 else "outside"
    verb = "grows" if offset < 0 else "shrinks"
    which = f" --labels {name}" if name_the_label else ""
    return (
        f"note: {name}: the masks lie on average {abs(offset):.2f} {unit} {where} the references (boundary offset "
        f"{offset:+.2f} {unit}, ASSD {assd:.2f} {unit}): one systematic shift, as two label conventions give. If the "
        f"references draw the edge where you want it, `attnseg dataset margin SOURCE OUT --mm {-offset:.1f}{which}` "
        f"{verb} the training labels to match (docs/generalisation.md)."
    )


def report_sides(report: EvaluationReport, sides: Sides, args: argparse.Namespace, folder: Path) -> dict[str, Path]:
    """Print and write where the masks fall short or reach beyond, side by side (``--sides``)."""
    from attnseg.evaluate import missed_heights, sides_table, write_sides

    print("\nby side of the patient (mean mm from the reference's surface to the mask's: + beyond it, - short of it):")
    print(sides_table(sides, report.labels))
    heights = missed_heights(sides)
    if heights:
        print("pieces missed whole, at mm above each reference's lowest axial slice:")
        print("\n".join(f"  {line}" for line in heights))
    if sides.skipped:
        print(f"({len(sides.skipped)} 2D case(s) have no sides: {', '.join(sides.skipped[:5])})")
    return write_sides(sides, folder, overwrite=args.overwrite)


def pixel_size(values: list[float] | None) -> tuple[float, ...] | None:
    """``--pixel-size``: one or two positive mm values (a picture is 2-D), else a usage error."""
    if values is None:
        return None
    if len(values) > 2 or not all(value > 0 and math.isfinite(value) for value in values):
        raise ConfigError(f"--pixel-size takes one or two positive mm values (X Y), got {values}")
    return tuple(values)


def run(args: argparse.Namespace) -> int:
    from attnseg.data.mask_files import SourceSeries
    from attnseg.evaluate import (
        OVERLAY_FOLDER,
        SIDES_FILES,
        evaluate_folders_and_sides,
        evaluate_qc,
        find_images,
        find_labels,
        write_overlays,
        write_reports,
    )
    from attnseg.fileio import check_writable
    from attnseg.metrics import markdown_table

    # a dataset folder's dataset.json, or the one above a labelsTr/ folder (None: names from the values)
    labels = find_labels(Path(args.reference), Path(args.labels) if args.labels else None)
    sources = SourceSeries(args.source_series)
    report, sides, problems = evaluate_folders_and_sides(
        args.predictions,
        args.reference,
        labels,
        args.nsd_tolerance,
        progress=not args.no_progress,
        num_workers=args.num_workers,
        sources=sources,
        pixel_size=pixel_size(args.pixel_size),
        images=find_images(args.reference, args.images) if args.sides else None,  # sides measured as pairs are read
    )
    if report is None:
        print(f"attnseg: error: {len(problems)} problem(s); nothing was evaluated:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    folder = Path(args.output or args.predictions)
    if args.sides:  # before anything is written: all the outputs or none
        for name in SIDES_FILES.values():
            check_writable(folder / name, args.overwrite)
    paths = write_reports(report, folder, overwrite=args.overwrite)
    print(markdown_table(report))
    several = sum(value != 0 for value in report.labels.values()) > 1
    means = report.mean()
    shifts = report.systematic_shifts()
    for name, offset in shifts.items():
        print(shift_note(name, offset, means[name]["ASSD"], name_the_label=several, unit=report.unit))
    if shifts and not args.sides and any(len(case.spacing) == 3 for case in report.cases):
        print("(`--sides` says on which sides of the patient, and which pieces of the references are missed whole)")
    if args.sides:
        paths.update(report_sides(report, sides, args, folder))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    qc = evaluate_qc(report, args.predictions, folder, overwrite=args.overwrite)
    if qc is not None:
        print(
            f"quality control (qc.json): Spearman(predicted, true Dice) {qc['spearman']:.2f} over {qc['cases']} "
            f"cases; flagged {qc['failures_caught']} of {qc['failures']} failed cases (true Dice < "
            f"{qc['failure_dice']:g}) and {qc['good_cases_flagged']} of {qc['good_cases']} good ones"
        )
    if args.overlays:
        images = find_images(args.reference, args.images)
        written = write_overlays(
            report, folder / OVERLAY_FOLDER, images, overwrite=args.overwrite, seg_labels=labels, sources=sources
        )
        print(f"wrote {len(written)} overlay(s) to {folder / OVERLAY_FOLDER}")
    return 0
