"""The cases of a prediction run: which scans, which outputs each writes, how big each is, and which
outputs a run may keep.

Everything here works from file names and headers alone (no pixel data), so that thousands of scans
can be listed, sized and checked in seconds before any is read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from attnseg.data.dataset import MISSING_CHANNEL_FILE, channel_file, declared_channel_names
from attnseg.data.dicom import check_series_target, series_voxel_count
from attnseg.data.dicom_seg import SEG_ENDING, is_seg_file, seg_grid
from attnseg.data.dicom_tree import find_dicom_series
from attnseg.data.geometry import Geometry
from attnseg.data.hounsfield import is_ct_channel
from attnseg.data.io import (
    EXTENSIONS,
    file_ending,
    is_image_file,
    is_picture,
    missing_voxel_data,
    read_grid,
    strip_ending,
)
from attnseg.errors import AttnsegError, ConfigError, DataError, OutputExistsError
from attnseg.fileio import check_writable

CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")
VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")
# The output format that writes each mask as a DICOM series folder (for DICOM series inputs).
DICOM_FORMAT = "dicom"
# The output format that writes each mask as one DICOM Segmentation file (for DICOM series inputs).
DICOM_SEG_FORMAT = "dicom-seg"
# How far (mm) a kept output's grid may be from its scan's: NIfTI stores its affine as float32.
GRID_ATOL_MM = 1e-4


@dataclass
class InputCase:
    """One scan to segment: its channel files (or a DICOM folder) and the name of its outputs."""

    case_id: str
    paths: tuple[Path, ...]
    ending: str  # the input's file ending, reused for the outputs unless asked otherwise
    series_uid: str | None = None  # a DICOM series among several in its folder

    @property
    def is_dicom(self) -> bool:
        """A DICOM series folder (not image files)."""
        return len(self.paths) == 1 and self.paths[0].is_dir()


@dataclass(frozen=True)
class CaseOutputs:
    """Where one case's outputs go: the mask (a file, or a DICOM series folder) and, if asked for, the
    class probabilities."""

    mask: Path
    probabilities: Path | None
    dicom: bool  # the mask is a DICOM series folder

    def __iter__(self) -> Iterator[tuple[Path, bool]]:
        """(path, is a DICOM series) for every output, the probabilities first: the mask is written last,
        so a mask on disk means its case is finished."""
        if self.probabilities is not None:
            yield self.probabilities, False
        yield self.mask, self.dicom


@dataclass(frozen=True)
class CaseSurvey:
    """What a run must do for one case, found from headers before any pixel is read.

    Attributes:
        voxels: the scan's size, to share the work out by (an estimate for DICOM; file bytes when the
            header cannot be read: that case will fail when it is read, and say why).
        to_write: the outputs this run writes (empty: the case is complete and skipped).
        problem: why the case cannot run (an output in the way); None when it can.
    """

    voxels: int
    to_write: tuple[Path, ...]
    problem: str | None = None


def find_cases(
    inputs: str | Path | Sequence[str | Path], num_channels: int, channel_names: Sequence[str] | None = None
) -> list[InputCase]:
    """The cases in ``inputs``: image files, folders of image files, or DICOM series folders.

    Files named nnU-Net style (``case_0000.nii.gz``, ``case_0001.nii.gz``) are grouped into one case
    with as many channels; a picture alone (``photo.png``, ``case_0000.png``) is one case, for a model of
    several channels one colour file holding them all (:mod:`attnseg.data.colour` checks its pixels);
    a DICOM series becomes one case named after its folder (masks as ``.nrrd`` unless the output format
    is ``dicom`` or ``dicom-seg``). A folder without image files may be a tree
    of series folders, or hold several series side by side: each image series is one case
    (:func:`~attnseg.data.dicom_tree.find_dicom_series`).

    With the model's ``channel_names``, a dataset.json in or beside an input folder (or a file's folder)
    that declares other channels, or the same in another order, is an error (:func:`check_channel_names`).
    """
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    if channel_names is not None:
        check_channel_names(paths, channel_names)
    files: list[Path] = []
    cases: list[InputCase] = []
    for path in paths:
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if is_image_file(p))
            if images:
                files += images
            else:  # no image files: DICOM series (read_image reports what is wrong if it is not one)
                series = find_dicom_series(path) or [None]
                cases += [
                    InputCase(s.case_id, (s.folder,), ".nrrd", s.series_uid)
                    if s is not None
                    else InputCase(path.name, (path,), ".nrrd")
                    for s in series
                ]
        else:
            file_ending(path)  # unsupported types fail here, naming the file
            files.append(path)
    cases += _group_channels(files, num_channels)
    if not cases:
        raise DataError(f"no images found in {', '.join(str(p) for p in paths)}")
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"several inputs would write the same output: {', '.join(duplicates[:5])}")
    return cases


def check_channel_names(paths: Iterable[Path], channel_names: Sequence[str]) -> None:
    """Refuse scans whose dataset.json declares channels other than the model's, in name or order.

    File ``CASE_000k`` is fed to the model as its channel k whatever it holds; a T2 where the model learnt
    a T1ce gives a confident, wrong mask and no error (the channels' intensities overlap too much to
    notice it from the voxels). The dataset.json beside the scans is the one statement of what each file
    holds, so it is checked; names are compared without case, and folders without one cannot be checked.
    A one-channel model is held only to CT or not CT (:func:`_same_channels`).
    """
    folders = dict.fromkeys(p if p.is_dir() else p.parent for p in paths)
    for folder in folders:
        declared = declared_channel_names(folder)
        if declared is None:
            continue
        source, names = declared
        if not _same_channels(names, channel_names):
            raise DataError(
                f"{source}: the scans' channels are {_numbered(names)}, but the model was trained on "
                f"{_numbered(channel_names)}; each CASE_000k file is read as the model's channel k, so rename "
                f"the files to the model's order (or correct {source.name} if it is wrong); nothing was predicted"
            )


def _same_channels(declared: Sequence[str], model: Sequence[str]) -> bool:
    """The same channels in the same order, names compared without case. One channel against one has no
    order to get wrong and a loose name ("MR", "T1", "T1w" for one scan): only CT against another modality
    counts there (the two are normalised on different scales)."""
    if len(declared) == len(model) == 1:
        return is_ct_channel(declared[0]) == is_ct_channel(model[0])
    return [n.strip().lower() for n in declared] == [n.strip().lower() for n in model]


def _numbered(names: Sequence[str]) -> str:
    """``_0000=T1, _0001=T1ce``: channel names by the file suffix that holds them."""
    return ", ".join(f"_{c:04d}={name}" for c, name in enumerate(names))


def _group_channels(files: Iterable[Path], num_channels: int) -> list[InputCase]:
    groups: dict[str, dict[int, Path]] = {}
    for path in files:
        stem = strip_ending(path)
        match = CHANNEL_SUFFIX.search(stem)
        case_id, channel = (stem[: match.start()], int(match.group(1))) if match else (stem, 0)
        if match is None and num_channels > 1 and not is_picture(path):  # a picture may be one colour file
            raise DataError(
                f"{path}: the model needs {num_channels} channels; name the files CASE_0000, CASE_0001, ..."
            )
        groups.setdefault(case_id, {})
        if channel in groups[case_id]:
            raise DataError(f"{path}: channel {channel} of case '{case_id}' given twice")
        groups[case_id][channel] = path
    cases, problems = [], []
    for case_id, channels in sorted(groups.items()):
        if list(channels) == [0] and is_picture(channels[0]):  # one picture: grey, or colour holding every channel
            cases.append(InputCase(case_id, (channels[0],), file_ending(channels[0])))
            continue
        gaps = _channel_gaps(case_id, channels, num_channels)
        problems += gaps
        if not gaps:
            ordered = tuple(channels[c] for c in range(num_channels))
            cases.append(InputCase(case_id, ordered, file_ending(ordered[0])))
    if problems:
        # Every case named at once, before any runs: found from file names in seconds, whereas a run
        # that went on would report them only after predicting the rest (hours, on a large batch).
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise DataError(
            f"{'; '.join(problems[:5])}{more} (the model takes {num_channels} channel files per case, "
            f"CASE_0000 to CASE_{num_channels - 1:04d}); nothing was predicted"
        )
    return cases


def _channel_gaps(case_id: str, channels: dict[int, Path], num_channels: int) -> list[str]:
    """What is wrong with one case's channel files, one line per file: each missing one named where it
    belongs (beside the case's other channels, as ``dataset check`` names it), each one beyond the model's
    channels named as found."""
    found = next(iter(channels.values()))
    folder, ending = found.parent, file_ending(found)
    missing = [
        f"{channel_file(folder, case_id, c, ending)}: {MISSING_CHANNEL_FILE}"
        for c in range(num_channels)
        if c not in channels
    ]
    extra = [
        f"{channels[c]}: channel {c} is not an input of the model (it takes {num_channels})"
        for c in sorted(channels)
        if c >= num_channels
    ]
    return missing + extra


def output_paths(case: InputCase, output: Path, ending: str | None, save_probabilities: bool) -> CaseOutputs:
    """``OUTPUT/<case><ending>`` (default: the input's ending) and ``OUTPUT/<case>_probabilities<ending>``;
    with ``ending="dicom"``, a series folder ``OUTPUT/<case>`` for a DICOM series input."""
    ending = ending or case.ending
    if ending == DICOM_FORMAT:
        return _dicom_output_paths(case, output, save_probabilities)
    if ending == DICOM_SEG_FORMAT:
        return _seg_output_paths(case, output, save_probabilities)
    if ending not in EXTENSIONS:
        raise ConfigError(
            f"output format {ending!r} is not one of {', '.join(EXTENSIONS)}, {DICOM_FORMAT} or {DICOM_SEG_FORMAT}"
        )
    probabilities = None
    if save_probabilities:
        probability_ending = ending if ending in VOLUME_ENDINGS else ".nii.gz"
        probabilities = output / f"{case.case_id}_probabilities{probability_ending}"
    return CaseOutputs(output / f"{case.case_id}{ending}", probabilities, dicom=False)


def _dicom_output_paths(case: InputCase, output: Path, save_probabilities: bool) -> CaseOutputs:
    """``OUTPUT/<case>`` (a series folder) and ``OUTPUT/<case>_probabilities.nrrd`` for a DICOM series input."""
    source = case.paths[0]
    if not source.is_dir():
        raise ConfigError(
            f"{source}: output format '{DICOM_FORMAT}' writes masks for DICOM series inputs, in the scan's study; "
            "this input is a file: choose a file ending such as .nrrd"
        )
    folder = output / case.case_id
    if folder.resolve() == source.resolve():
        raise ConfigError(f"{folder}: the mask series would replace its own input; choose another output folder")
    probabilities = output / f"{case.case_id}_probabilities.nrrd" if save_probabilities else None
    return CaseOutputs(folder, probabilities, dicom=True)


def _seg_output_paths(case: InputCase, output: Path, save_probabilities: bool) -> CaseOutputs:
    """``OUTPUT/<case>.seg.dcm`` (one DICOM SEG instance) and ``OUTPUT/<case>_probabilities.nrrd``."""
    if not case.is_dicom:
        raise ConfigError(
            f"{case.paths[0]}: output format '{DICOM_SEG_FORMAT}' writes a DICOM Segmentation for a DICOM series "
            "input, in the scan's study; this input is a file: choose a file ending such as .nrrd"
        )
    probabilities = output / f"{case.case_id}_probabilities.nrrd" if save_probabilities else None
    return CaseOutputs(output / f"{case.case_id}{SEG_ENDING}", probabilities, dicom=False)


# sizing and checking, from headers ---------------------------------------------------------------------


def survey_case(case: InputCase, outputs: CaseOutputs, overwrite: bool, skip_existing: bool) -> CaseSurvey:
    """Size ``case`` and decide, output by output, what a run does with it.

    A missing output is written. An existing one is replaced with ``overwrite`` alone; with
    ``skip_existing`` it is kept if it is complete (:func:`incomplete_reason`), and otherwise replaced
    only with ``overwrite`` as well (else the case is not run, and the problem says why). Without either
    option an existing output is a problem too (the caller refuses the whole run before any work).
    """
    voxels, grid = _size(case)
    to_write, problem = outputs_to_write(outputs, overwrite, skip_existing, grid)
    return CaseSurvey(voxels, to_write, problem)


def outputs_to_write(
    outputs: CaseOutputs,
    overwrite: bool,
    skip_existing: bool,
    grid: tuple[tuple[int, ...], Geometry] | None = None,
) -> tuple[tuple[Path, ...], str | None]:
    """(the outputs a run writes, why the case cannot run or None), by :func:`survey_case`'s rules, from the
    output names alone (and the scan's ``grid``, when known): the PACS round trip asks this before it
    retrieves a series, so that a refused or complete output costs no download."""
    to_write: list[Path] = []
    for path, dicom in outputs:
        if skip_existing and _exists(path, dicom):
            reason = incomplete_reason(path, dicom, grid)
            if reason is None:
                continue  # complete: kept
            if not overwrite:
                return (), f"{path} exists but {reason}; delete it, or pass --overwrite to replace it"
        try:
            (check_series_target if dicom else check_writable)(path, overwrite)
        except AttnsegError as error:
            return (), str(error)
        to_write.append(path)
    return tuple(to_write), None


def existing_outputs_error(problems: Sequence[str], skip_existing: bool = False) -> OutputExistsError:
    """The refusal of a run whose outputs are in the way (``problems``: one line per case, the first shown);
    the way out through ``skip_existing`` is offered unless it was taken already."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    hint = (
        ""
        if skip_existing
        else "; or pass skip_existing=True (--skip-existing) to keep complete outputs and predict only the missing ones"
    )
    return OutputExistsError(f"{problems[0]}{more}{hint}")


def _size(case: InputCase) -> tuple[int, tuple[tuple[int, ...], Geometry] | None]:
    """(voxels, (spatial shape, geometry) from the header, or None for DICOM series and unreadable headers)."""
    source = case.paths[0]
    try:
        if source.is_dir():
            return series_voxel_count(source), None
        shape, geometry = read_grid(source)
        return math.prod(shape), (shape, geometry)
    except Exception:  # unreadable: sized by its bytes; reading it later reports what is wrong
        return _bytes(source), None


def _bytes(source: Path) -> int:
    try:
        return sum(p.stat().st_size for p in source.iterdir()) if source.is_dir() else source.stat().st_size
    except OSError:
        return 0


def _exists(path: Path, dicom: bool) -> bool:
    """A DICOM series output exists when its folder holds something (an empty folder may be written into)."""
    if dicom and path.is_dir():
        return any(path.iterdir())
    return path.exists()


def incomplete_reason(path: Path, dicom: bool, grid: tuple[tuple[int, ...], Geometry] | None = None) -> str | None:
    """Why the existing output ``path`` is not a finished output of its scan; None when it is.

    Outputs are written under a hidden temporary name and renamed into place once complete, so a killed
    run leaves nothing half-written under an output's name. What can still be there: a file from
    elsewhere (another tool, a copy cut short, a crash of the storage): its header must read, and give
    the scan's shape and grid (``grid``, when the scan's header gave one), and hold all the voxel data that
    its header promises (:func:`attnseg.data.io.missing_voxel_data`).
    """
    if dicom:
        return None if path.is_dir() and any(path.iterdir()) else "is not a DICOM series folder"
    if path.name.lower().endswith(SEG_ENDING):
        if not is_seg_file(path):
            return "is not a DICOM Segmentation file"
        try:
            seg_grid(path)
        except Exception as error:
            return f"cannot be read ({str(error).removeprefix(f'{path}: ')})"
        return None
    try:
        shape, geometry = read_grid(path)
        missing = missing_voxel_data(path)  # a header that reads can head a copy cut short
    except Exception as error:  # whatever a damaged file makes a reader raise, it is not complete
        return f"cannot be read ({str(error).removeprefix(f'{path}: ')})"
    if missing:
        return missing
    if grid is None:
        return None
    expected_shape, expected_geometry = grid
    if shape != expected_shape:
        return f"has shape {shape}, not its scan's {expected_shape}"
    differences = geometry.differences(expected_geometry, atol=GRID_ATOL_MM)
    if differences:
        return f"is not on its scan's grid ({'; '.join(differences)})"
    return None
