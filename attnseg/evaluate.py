"""``attnseg evaluate PRED GT``: compare a folder of predicted masks with reference masks.

Cases are paired by name (``case.nii.gz`` with ``case.nii.gz``; probability maps written by
``attnseg predict`` are ignored). Either side may also be DICOM Segmentation files (``case.seg.dcm`` or
``case.dcm``, e.g. references downloaded from an archive): a SEG is placed by its frames' positions onto
the grid of its source series (found by SeriesInstanceUID, :class:`~attnseg.data.mask_files.SourceSeries`),
or of the image file it is compared with (:mod:`attnseg.data.mask_files`), so the comparison is in physical
space on the scan's full grid, however few frames the SEG stores. Before anything is computed every pair
is checked (image files from their headers alone): a case missing on either side, a pair whose shape or
geometry (spacing, origin, direction) disagree, a SEG whose frames do not lie on the grid or whose
segments are not classes, or two SEGs with frames missing and no source series to place them on, is a problem;
all problems are listed together and nothing is evaluated. Metrics are then computed one case at a time
(attnseg.metrics), each mask read once. A mask holding values that are not classes
(:mod:`attnseg.data.label_values`) is a problem too, found as its pair is read: reading every mask
beforehand would double the time on large CT, where reading is most of it; the problems are then listed as
the others are and nothing is reported. The classes are the labels given (a dataset.json's, or --labels');
without them, the values the references hold, all cases together, so that a class absent from some cases
is never a problem. Metrics are written as nnU-Net-style ``summary.json``, a per-case CSV and a Markdown
table; on request, one overlay picture per case (:func:`write_overlays`) shows where prediction and reference
disagree, over the scan when it can be found, and :func:`case_sides` says on which sides of the patient
the masks fall short or reach beyond, and which pieces of the references they miss whole
(:mod:`attnseg.metrics.sides`).

Large folders: ``num_workers`` processes each read a pair and compute its metrics (surface distances
dominate, and they hold the GIL, so threads would not help); only the small per-case results travel
back, in case order, so the report is the same as a serial run's.
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

from attnseg.data import read_image
from attnseg.data.dataset import load_dataset, parse_labels
from attnseg.data.image import Image
from attnseg.data.io import is_image_file, pixel_size_stored, read_grid, strip_ending
from attnseg.data.label_values import describe_stray, stray_values, value_counts
from attnseg.data.mask_files import Grid, SourceSeries, is_mask_file, mask_case_id, pair_grid, read_mask
from attnseg.data.orientation import reorientation
from attnseg.errors import ConfigError, DataError
from attnseg.fileio import check_writable, read_json, write_json, write_text
from attnseg.metrics import CaseResult, EvaluationCase, EvaluationReport, evaluate_case, evaluate_cases
from attnseg.metrics.binary import check_labels
from attnseg.metrics.qc_agreement import qc_agreement
from attnseg.metrics.report import MM, PIXELS, common_unit, csv_text, write_case_csv, write_markdown, write_summary_json
from attnseg.metrics.sides import SIDES, missed_by_quarter, missed_pieces, side_offsets

GEOMETRY_ATOL = 1e-4  # mm: NIfTI stores its affine as float32
REPORT_FILES = {"summary": "summary.json", "cases": "cases.csv", "table": "summary.md"}
QC_FILE = "qc.json"  # written by `attnseg predict` beside the masks
QC_EVALUATION = "qc_evaluation.json"
T = TypeVar("T")
R = TypeVar("R")
OVERLAY_FOLDER = "overlays"  # beside the reports
SIDES_FILES = {"sides": "sides.csv", "pieces": "pieces_missed.csv"}  # beside the reports, with --sides
_FIRST_CHANNEL = re.compile(r"_0000$")


@dataclass(frozen=True)
class MaskPair:
    """One case's prediction and reference files, and the grid to compare them on (None: their own,
    which agree; a grid when a SEG is involved). ``stored``: both files state their pixel size (decided once,
    by :func:`pair_cases`; a SEG, on a scan's grid, does). ``pixel_size``: the mm per pixel the user stated for
    pictures that store none (None: the files' spacing, in pixels for such pictures)."""

    case_id: str
    prediction: Path
    reference: Path
    grid: Grid | None = None
    stored: bool = True
    pixel_size: tuple[float, ...] | None = None

    @property
    def unit(self) -> str:
        """Of the distances measured on this pair: mm, or pixels (attnseg.data.pixel_size)."""
        return MM if self.stored or self.pixel_size is not None else PIXELS


@dataclass
class Pairing:
    pairs: list[MaskPair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _mask_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of masks")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if is_mask_file(path) and not mask_case_id(path).endswith("_probabilities"):
            case_id = mask_case_id(path)
            if case_id in files:
                raise DataError(f"{path}: a second mask for case '{case_id}' in {folder} (also {files[case_id].name})")
            files[case_id] = path
    return files


def reference_folder(reference: Path) -> Path:
    """A dataset folder means its ``labelsTr/``; any other folder is taken as it is."""
    labels = reference / "labelsTr"
    return labels if (reference / "dataset.json").exists() and labels.is_dir() else reference


def find_labels(reference: Path, labels_file: Path | None = None) -> dict[str, int] | None:
    """Class names from ``labels_file`` (dataset.json or labels.json), else from a dataset.json beside
    or above the reference masks; None when there is none (names are made from the values found)."""
    candidates = [labels_file] if labels_file else [reference / "dataset.json", reference.parent / "dataset.json"]
    for path in candidates:
        if path is not None and path.exists():
            spec = read_json(path)
            return parse_labels(spec if "labels" in spec else {"labels": spec}, path)
    return None


def pair_cases(
    predictions: Path,
    reference: Path,
    sources: SourceSeries | None = None,
    seg_labels: dict[str, int] | None = None,
) -> Pairing:
    """Pair masks by case name and check, from the headers, that shapes and geometries agree (a SEG: that
    it lies on the grid it is compared on, its source series' when ``sources`` or its folder holds it, and
    that its segments are classes of ``seg_labels`` when given)."""
    predicted, expected = _mask_files(predictions), _mask_files(reference)
    sources = sources or SourceSeries()  # one for all pairs: each folder is indexed once
    pairing = Pairing()
    for case_id in sorted(set(expected) - set(predicted)):
        pairing.problems.append(f"{expected[case_id]}: no prediction for case '{case_id}' in {predictions}")
    for case_id in sorted(set(predicted) - set(expected)):
        pairing.problems.append(f"{predicted[case_id]}: no reference for case '{case_id}' in {reference}")
    for case_id in sorted(set(predicted) & set(expected)):
        pred_path, ref_path = predicted[case_id], expected[case_id]
        try:
            grid = pair_grid(pred_path, ref_path, sources, seg_labels)
            if grid is not None:
                pairing.pairs.append(MaskPair(case_id, pred_path, ref_path, grid))  # a SEG: on a scan's grid, in mm
                continue
            problem = _grid_problem(pred_path, read_grid(pred_path), ref_path, read_grid(ref_path))
        except DataError as error:
            problem = str(error)
        if problem:
            pairing.problems.append(problem)
        else:  # in mm only if both state their pixel size: a PNG predicted from a picture carries its 1 x 1
            stored = pixel_size_stored(pred_path) and pixel_size_stored(ref_path)
            pairing.pairs.append(MaskPair(case_id, pred_path, ref_path, stored=stored))
    return pairing


def _grid_problem(prediction: Path, pred_grid: Grid, reference: Path, ref_grid: Grid) -> str | None:
    """Why two image files' grids (from their headers) cannot be compared voxel by voxel, or None."""
    (pred_shape, pred_geometry), (ref_shape, ref_geometry) = pred_grid, ref_grid
    if pred_shape != ref_shape:
        return f"{prediction}: shape {pred_shape} differs from {reference} {ref_shape}"
    differences = pred_geometry.differences(ref_geometry, atol=GEOMETRY_ATOL)
    if differences:
        return f"{prediction}: geometry differs from {reference} ({'; '.join(differences)})"
    return None


def _read_pair(pair: MaskPair, seg_labels: dict[str, int] | None = None) -> tuple[Image, Image]:
    """Read both masks of ``pair`` on one grid; a SEG's segments get ``seg_labels``' values by name (else
    their numbers)."""
    prediction = read_mask(pair.prediction, pair.grid, seg_labels)  # shapes agree: pair_cases checked
    return prediction, read_mask(pair.reference, pair.grid, seg_labels)


def _evaluation_case(pair: MaskPair, prediction: Image, reference: Image) -> EvaluationCase:
    spacing = reference.geometry.spacing
    if pair.pixel_size is not None and not pair.stored:
        spacing = pair.pixel_size * (len(spacing) // len(pair.pixel_size))  # one value: square pixels
    return EvaluationCase(
        pair.case_id,
        np.asarray(prediction.array[0]),
        np.asarray(reference.array[0]),
        spacing,
        str(pair.prediction),
        str(pair.reference),
        pair.unit,
    )


@dataclass(frozen=True)
class Classes:
    """The values masks may hold: those of the ``labels`` given (a dataset.json's), or, ``inferred`` when there
    were none, the values the references hold (a problem then says so, and how to name a class that no
    reference holds)."""

    labels: dict[str, int]
    inferred: bool = False

    def stray(self, path: str | None, mask: np.ndarray) -> str | None:
        """The problem with ``mask`` (read from ``path``) when it holds values that are not classes, else None."""
        stray = stray_values(mask, self.labels.values())
        if not stray:
            return None
        named = {0: "background", **{value: name for name, value in self.labels.items()}}
        where = (
            f"no class list: the values the references hold, {', '.join(map(str, sorted(named)))}; if it is a "
            "class that no reference holds, name the classes with --labels"
            if self.inferred
            else ", ".join(f"{value} {name}" for value, name in sorted(named.items()))
        )
        plural = len(stray) > 1
        return f"{path}: {describe_stray(stray)} not {'classes' if plural else 'a class'} ({where})"


def _evaluate_pair(
    pair: MaskPair,
    classes: Classes,
    nsd_tolerance_mm: float,
    seg_labels: dict[str, int] | None,
    images: dict[str, Path] | None = None,
) -> tuple[CaseResult, Sides | None] | list[str]:
    """Read one pair (in a worker process or this one) and compute its metrics, and its sides when ``images``
    is given (``{}``: no scans) from the same read, each mask read once; the problems instead when a mask
    holds values that are not classes (metrics would count those voxels as background)."""
    prediction, reference = _read_pair(pair, seg_labels)
    case = _evaluation_case(pair, prediction, reference)
    masks = ((case.prediction_file, case.prediction), (case.reference_file, case.reference))
    problems = [problem for problem in (classes.stray(path, mask) for path, mask in masks) if problem]
    if problems:
        return problems
    result = evaluate_case(case, check_labels(classes.labels), nsd_tolerance_mm)
    if images is None:
        return result, None
    return result, case_sides(pair, prediction, reference, classes.labels, images.get(pair.case_id))


def _reference_values(pair: MaskPair) -> set[int]:
    return {int(v) for v in value_counts(read_mask(pair.reference, pair.grid).array)}


def _labels_from_values(values: Iterable[set[int]]) -> dict[str, int]:
    found: set[int] = {0}
    for case_values in values:
        found |= case_values
    return {("background" if v == 0 else f"label_{v}"): v for v in sorted(found)}


def _map(function: Callable[[T], R], items: list[T], num_workers: int) -> Iterator[R]:
    """``function`` over ``items``, results in order: in this process, or in ``num_workers`` processes.

    The workers are forked from a fork server: a fresh process that imported this module once (so each
    worker starts in milliseconds), never a fork of this one and whatever threads it runs.
    """
    if num_workers <= 0:
        yield from map(function, items)
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(min(num_workers, len(items)), mp_context=context) as pool:
        yield from pool.map(function, items)


def evaluate_folders(
    predictions: str | Path, reference: str | Path, labels: dict[str, int] | None = None, **options: Any
) -> tuple[EvaluationReport | None, list[str]]:
    """Evaluate every pair; returns (report, []) or (None, problems) when the folders do not match.
    ``options``: those of :func:`evaluate_folders_and_sides` but ``images`` (no sides)."""
    report, _, problems = evaluate_folders_and_sides(predictions, reference, labels, **options)
    return report, problems


def evaluate_folders_and_sides(
    predictions: str | Path,
    reference: str | Path,
    labels: dict[str, int] | None = None,
    nsd_tolerance_mm: float = 1.0,
    progress: bool = True,
    num_workers: int = 0,
    sources: SourceSeries | None = None,
    pixel_size: tuple[float, ...] | None = None,
    images: dict[str, Path] | None = None,
) -> tuple[EvaluationReport | None, Sides | None, list[str]]:
    """Evaluate every pair, and with ``images`` (case id -> scan; ``{}``: none) measure its :class:`Sides` as
    it is read (:func:`case_sides`): each mask is read once, and only the small per-case results are kept, so
    a 600-case CT run holds one pair at a time (per worker). Returns (report, sides or None, []) or (None,
    None, problems) when the folders do not match.

    Distances are in mm; pairs of pictures that store no pixel size (:mod:`attnseg.data.pixel_size`) are
    measured in pixels, the NSD tolerance then in pixels too, and the report says so, unless ``pixel_size``
    (mm per pixel: one value, or one per axis) states it. Pairs in mm and in pixels are never averaged
    together: a mix is a problem naming the cases of each.

    ``num_workers``: processes that read and evaluate the pairs in parallel (0: all in this process);
    the report is the same either way. SEG files get the values of ``labels`` by their segments' labels;
    without ``labels``, their segment numbers. ``sources``: where the SEGs' source series are looked for
    (default: the SEGs' own folders). A mask holding a value that is not among ``labels`` (without
    ``labels``: among the values the references hold) is a problem (:class:`Classes`).
    """
    if num_workers < 0:
        raise ConfigError(f"num_workers must be 0 or more, got {num_workers}")
    reference = reference_folder(Path(reference))
    pairing = pair_cases(Path(predictions), reference, sources, labels)
    if pairing.problems:
        return None, None, pairing.problems
    if not pairing.pairs:
        return None, None, [f"{predictions}: no masks to evaluate"]
    if pixel_size is not None:
        pairing.pairs = [replace(pair, pixel_size=tuple(pixel_size)) for pair in pairing.pairs]
    try:
        common_unit(pairing.pairs)
    except DataError as error:
        return None, None, [str(error)]
    if labels:
        classes = Classes(labels)
    else:  # the references' values, all cases together: a class absent from some cases is still one
        classes = Classes(_labels_from_values(_map(_reference_values, pairing.pairs, num_workers)), inferred=True)
    check_labels(classes.labels)  # a bad label list is refused before any mask is read
    evaluate = partial(
        _evaluate_pair, classes=classes, nsd_tolerance_mm=nsd_tolerance_mm, seg_labels=labels, images=images
    )
    # lazily, in this process (one pair in memory at a time) or in workers; only the small results are kept
    results = _map(evaluate, pairing.pairs, num_workers)
    results = list(tqdm(results, "evaluate", len(pairing.pairs), unit="case", disable=not progress))
    problems = [problem for result in results if isinstance(result, list) for problem in result]
    if problems:
        return None, None, problems
    done = [result for result in results if isinstance(result, tuple)]
    report = evaluate_cases([case for case, _ in done], classes.labels, nsd_tolerance_mm=nsd_tolerance_mm)
    return report, None if images is None else Sides.joined(case for _, case in done if case is not None), []


def write_reports(report: EvaluationReport, folder: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """summary.json, cases.csv and summary.md in ``folder`` (all checked before any is written)."""
    paths = {key: Path(folder) / name for key, name in REPORT_FILES.items()}
    for path in paths.values():
        check_writable(path, overwrite)
    write_summary_json(report, paths["summary"], overwrite=overwrite)
    write_case_csv(report, paths["cases"], overwrite=overwrite)
    write_markdown(report, paths["table"], overwrite=overwrite)
    return paths


def mean_dice_per_case(report: EvaluationReport) -> dict[str, float]:
    """Every case's Dice averaged over its foreground classes (classes empty on both sides left out; 1
    when every class is)."""
    foreground = [name for name, value in report.labels.items() if value != 0]
    result = {}
    for case in report.cases:
        scores = [float(case.metrics[name].get("Dice")) for name in foreground if name in case.metrics]
        finite = [s for s in scores if np.isfinite(s)]
        result[case.case_id] = float(np.mean(finite)) if finite else 1.0
    return result


def evaluate_qc(
    report: EvaluationReport, predictions: str | Path, folder: str | Path, overwrite: bool = False
) -> dict[str, Any] | None:
    """When ``predictions`` holds the ``qc.json`` of `attnseg predict`: how well its predicted Dice ranks
    the true Dice (Spearman) and how many failed cases its verdicts caught, written to
    ``FOLDER/qc_evaluation.json``; None (nothing written) without a qc.json."""
    source = Path(predictions) / QC_FILE
    if not source.is_file():
        return None
    cases = read_json(source).get("cases")
    if not isinstance(cases, list):
        raise DataError(f"{source}: no 'cases' list; is it the qc.json of `attnseg predict`?")
    agreement = qc_agreement(cases, mean_dice_per_case(report))
    write_json(Path(folder) / QC_EVALUATION, agreement, overwrite=overwrite)
    return agreement


def find_images(reference: str | Path, images: str | Path | None = None) -> dict[str, Path]:
    """Case id -> the scan to draw overlays on: from ``images`` (files named CASE or CASE_0000, or DICOM
    series folders named CASE), else from the dataset that ``reference`` is (or lies in); {} if none."""
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder of images")
        found = {}
        for path in sorted(folder.iterdir()):
            if is_image_file(path):
                found.setdefault(_FIRST_CHANNEL.sub("", strip_ending(path)), path)
            elif path.is_dir():
                found.setdefault(path.name, path)
        return found
    reference = Path(reference)
    for root in (reference, reference.parent):
        if (root / "dataset.json").exists():
            try:
                dataset = load_dataset(root)
            except DataError:
                return {}
            return {case.id: case.images[0] for case in (*dataset.cases, *dataset.test_cases)}
    return {}


def write_overlays(
    report: EvaluationReport,
    folder: str | Path,
    images: dict[str, Path] | None = None,
    overwrite: bool = False,
    seg_labels: dict[str, int] | None = None,
    sources: SourceSeries | None = None,
) -> list[Path]:
    """One ``CASE_overlay.png`` per case in ``folder``: reference and prediction outlines and the errors
    on the slices where they disagree most (:func:`attnseg.visualize.overlay.save_comparison`), over the
    case's scan when ``images`` has it (else over a blank background). ``seg_labels`` and ``sources``: as
    given to :func:`evaluate_folders`, for SEG files."""
    from attnseg.visualize.overlay import save_comparison

    folder = Path(folder)
    paths = [folder / f"{case.case_id}_overlay.png" for case in report.cases]
    for path in paths:
        check_writable(path, overwrite)
    images, sources = images or {}, sources or SourceSeries()
    for case, path in zip(report.cases, paths, strict=True):
        prediction, reference = _read_case_masks(case, seg_labels, sources)
        scan = images.get(case.case_id)
        picture = read_image(scan).array[0] if scan is not None else np.zeros(reference.spatial_shape, np.float32)
        if picture.shape != reference.spatial_shape:
            raise DataError(f"{scan}: shape {picture.shape} differs from its reference {case.reference_file}")
        note = "" if scan is not None else " (no scan found: pass --images)"
        save_comparison(
            picture,
            reference.array[0],
            prediction.array[0],
            report.labels,
            path,
            geometry=reference.geometry,
            title=f"{case.case_id}{note}",
            overwrite=overwrite,
        )
    return paths


def _read_case_masks(case: CaseResult, seg_labels: dict[str, int] | None, sources: SourceSeries) -> tuple[Image, Image]:
    """A reported case's prediction and reference again, on the grid they were compared on."""
    pred_path, ref_path = Path(str(case.prediction_file)), Path(str(case.reference_file))
    grid = pair_grid(pred_path, ref_path, sources)
    return read_mask(pred_path, grid, seg_labels), read_mask(ref_path, grid, seg_labels)


@dataclass
class Sides:
    """Where the masks fall short of the references or reach beyond them, by side of the patient
    (:mod:`attnseg.metrics.sides`): one row per case, class and side, one per piece missed whole, and the 2-D
    cases that have no sides."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    pieces: list[dict[str, Any]] = field(default_factory=list)
    piece_counts: dict[str, int] = field(default_factory=dict)  # class -> pieces of the references
    quarters: dict[str, list[list[float]]] = field(default_factory=dict)  # class -> per case, with a scan
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def joined(cls, cases: Iterable[Sides]) -> Sides:
        """The cases' sides in one, in their order (as if measured one case after the other)."""
        out = cls()
        for case in cases:
            out.rows.extend(case.rows)
            out.pieces.extend(case.pieces)
            for name, count in case.piece_counts.items():
                out.piece_counts[name] = out.piece_counts.get(name, 0) + count
            for name, quarters in case.quarters.items():
                out.quarters.setdefault(name, []).extend(quarters)
            out.skipped.extend(case.skipped)
        return out

    def mean_by_side(self, name: str) -> dict[str, float]:
        """Class ``name``'s mean signed distance per side, the mean over its cases."""
        out = {}
        for side in SIDES:
            values = [r["mean_mm"] for r in self.rows if r["label"] == name and r["side"] == side]
            if values:
                out[side] = float(np.mean(values))
        return out


def case_sides(pair: MaskPair, prediction: Image, reference: Image, labels: dict[str, int], scan: Path | None) -> Sides:
    """:class:`Sides` of one case: each foreground class of ``labels`` whose reference is not empty, the masks
    reoriented to RAS (a 2-D case is skipped); with ``scan``, also the intensities of the missed voxels."""
    sides = Sides()
    if reference.spatial_dims != 3:
        sides.skipped.append(pair.case_id)
        return sides
    turn = reorientation(reference.geometry)
    pred, ref = turn.apply(prediction.array)[0], turn.apply(reference.array)[0]
    ras = turn.geometry(reference.geometry, reference.spatial_shape)
    spacing, axes = ras.spacing, ras.ras_affine[:3, :3] / np.asarray(ras.spacing)  # unit voxel axes, RAS
    picture = turn.apply(read_image(scan).array)[0] if scan is not None else None
    if picture is not None and picture.shape != ref.shape:
        raise DataError(f"{scan}: shape {picture.shape} differs from its reference {pair.reference}")
    for name, value in labels.items():
        if value != 0:
            _measure_class(sides, pair.case_id, name, pred == value, ref == value, spacing, axes, picture)
    return sides


def _measure_class(
    sides: Sides,
    case_id: str,
    name: str,
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, ...],
    axes: np.ndarray,
    picture: np.ndarray | None,
) -> None:
    if not ref.any():
        return
    if pred.any():
        for offset in side_offsets(pred, ref, spacing, axes):
            sides.rows.append({"case_id": case_id, "label": name, **vars(offset)})
    count, missed = missed_pieces(pred, ref, spacing)
    sides.piece_counts[name] = sides.piece_counts.get(name, 0) + count
    sides.pieces.extend({"case_id": case_id, "label": name, **vars(piece)} for piece in missed)
    if picture is not None:
        sides.quarters.setdefault(name, []).append(missed_by_quarter(pred, ref, picture))


def write_sides(sides: Sides, folder: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """sides.csv (a row per case, class and side) and pieces_missed.csv in ``folder``, atomically."""
    paths = {key: Path(folder) / name for key, name in SIDES_FILES.items()}
    for path in paths.values():
        check_writable(path, overwrite)
    columns = ["case_id", "label", "side", "surface_voxels", "mean_mm", "median_mm", "unreached"]
    write_text(paths["sides"], csv_text(sides.rows, columns), overwrite=overwrite)
    columns = ["case_id", "label", "height_mm", "area_mm2", "covered"]
    write_text(paths["pieces"], csv_text(sides.pieces, columns), overwrite=overwrite)
    return paths


def sides_table(sides: Sides, labels: dict[str, int]) -> str:
    """Markdown: per class, the mean signed distance on each side (mm; + beyond the reference, - short of it),
    the pieces missed whole and, where scans were given, the quarters of intensity of the missed voxels."""
    names = [name for name, value in labels.items() if value != 0 and name in sides.piece_counts]
    lines = [
        f"| class | {' | '.join(SIDES)} | pieces missed whole | missed voxels by intensity quarter, darkest first |",
        "|---|" + "---|" * (len(SIDES) + 2),
    ]
    for name in names:
        by_side = sides.mean_by_side(name)
        cells = [f"{by_side[side]:+.2f}" if side in by_side else "n/a" for side in SIDES]
        missed = sum(p["label"] == name for p in sides.pieces)
        quarters = sides.quarters.get(name)
        shares = ", ".join(f"{q:.0%}" for q in np.mean(quarters, axis=0)) if quarters else "(no scans)"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {missed} of {sides.piece_counts[name]} | {shares} |")
    return "\n".join(lines)


def missed_heights(sides: Sides, cases: int = 10) -> list[str]:
    """For the first ``cases`` cases with pieces missed whole: where, as ranges of heights above the
    reference's lowest slice (pieces within 5 mm of each other run together), e.g. ``itk: 0-6, 28-36 mm``."""
    by_case: dict[str, list[float]] = {}
    for piece in sides.pieces:
        by_case.setdefault(f"{piece['case_id']} ({piece['label']})", []).append(piece["height_mm"])
    lines = []
    for name, heights in list(by_case.items())[:cases]:
        runs: list[list[float]] = []
        for height in sorted(heights):
            if runs and height - runs[-1][-1] <= 5.0:
                runs[-1].append(height)
            else:
                runs.append([height])
        spans = [f"{r[0]:g}" if r[0] == r[-1] else f"{r[0]:g}-{r[-1]:g}" for r in runs]
        lines.append(f"{name}: {', '.join(spans)} mm")
    return lines
