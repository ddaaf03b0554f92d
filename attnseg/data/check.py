"""``attnseg dataset check``: read every case once, report what is wrong and what the data look like.

Errors (the command exits non-zero): an image without a label, a file that cannot be read, a label whose
shape or geometry differs from its image, label values outside the declared labels, NaN or infinite
intensities, a wrong number of channels, a 4-D file where nnU-Net expects one 3-D file per channel, a
mix of 2-D and 3-D cases. Warnings: a label with no foreground, an image channel whose every voxel holds
one value (a failed export, a blank series), files the layout ignores. Orientations are reported, not
judged: every volume is reoriented to RAS before planning (attnseg.data.orientation).

The same pass gathers the dataset *fingerprint* (per-case spacing, size, size after cropping to the
non-zero region, in RAS axis order for volumes; class voxel counts, and a sample of foreground
intensities per channel, as nnU-Net's fingerprint extractor does) from which
:func:`attnseg.data.plan.plan_dataset` derives a plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnseg.data.arrays import nonzero_bbox
from attnseg.data.dataset import Case, Dataset, Problem, load_dataset, no_cases_message
from attnseg.data.hounsfield import hounsfield_problem, is_ct_channel
from attnseg.data.io import Image, pixel_size_stored, read_label
from attnseg.data.label_values import value_counts
from attnseg.data.orientation import CANONICAL, reorientation
from attnseg.errors import DataError

# Geometry tolerance between an image and its label (mm and direction cosines): what ITK-based tools
# tolerate after NIfTI's float32 header rounding, far below any voxel size.
GEOMETRY_ATOL = 1e-4
# Foreground voxels sampled per case and channel for the intensity statistics (nnU-Net's number).
INTENSITY_SAMPLES = 10_000


@dataclass
class CaseStats:
    """What the fingerprint keeps of one case."""

    id: str
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    cropped_shape: tuple[int, ...]
    orientation: str
    class_voxels: dict[int, int]
    channel_stats: list[dict[str, float]]  # per channel over all voxels: min, max, mean, std
    pixel_size_stored: bool = True  # False: a picture read as 1 x 1 (attnseg.data.pixel_size)


@dataclass
class Fingerprint:
    """Per-case statistics plus pooled foreground intensity samples per channel."""

    cases: list[CaseStats]
    foreground_samples: list[np.ndarray]  # per channel, float64
    spatial_dims: int
    num_channels: int

    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=float)

    def shapes(self) -> np.ndarray:
        return np.array([c.shape for c in self.cases], dtype=float)

    def cropped_shapes(self) -> np.ndarray:
        return np.array([c.cropped_shape for c in self.cases], dtype=float)

    def label_values(self) -> list[int]:
        return sorted({v for c in self.cases for v in c.class_voxels} | {0})

    def foreground_statistics(self, channel: int) -> dict[str, float]:
        """nnU-Net's intensity properties of the pooled foreground sample of one channel."""
        sample = self.foreground_samples[channel]
        if sample.size == 0:
            return {}
        p005, p995 = np.percentile(sample, [0.5, 99.5])
        return {
            "mean": float(sample.mean()),
            "std": float(sample.std()),
            "median": float(np.median(sample)),
            "min": float(sample.min()),
            "max": float(sample.max()),
            "percentile_00_5": float(p005),
            "percentile_99_5": float(p995),
        }


@dataclass
class CheckReport:
    """Problems found and the fingerprint of the cases that could be read."""

    dataset: Dataset
    problems: list[Problem] = field(default_factory=list)
    fingerprint: Fingerprint | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: cases, channels, labels, spacings, sizes, intensities, class frequencies."""
        ds = self.dataset
        out: dict[str, Any] = {
            "path": str(ds.root),
            "layout": ds.layout,
            "training_cases": len(ds.cases),
            "test_cases": len(ds.test_cases),
            "channels": ds.channel_names,
            "labels": ds.labels,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
        }
        fp = self.fingerprint
        if fp is None or not fp.cases:
            return out
        out["cases_read"] = len(fp.cases)
        out["spacing"] = _spread(fp.spacings())
        out["spacing_stored"] = _spacing_stored(fp)
        out["size"] = _spread(fp.shapes())
        out["size_after_crop"] = _spread(fp.cropped_shapes())
        out["orientations"] = dict(Counter(c.orientation for c in fp.cases if c.orientation))
        out["intensity"] = [
            {"channel": name, "foreground": fp.foreground_statistics(i), "all": _pooled_channel(fp, i)}
            for i, name in enumerate(_channel_list(ds, fp.num_channels))
        ]
        total = sum(sum(c.class_voxels.values()) for c in fp.cases)
        names = {v: n for n, v in (ds.labels or {}).items()}
        out["classes"] = [
            {
                "value": value,
                "name": names.get(value, str(value)),
                "voxel_fraction": sum(c.class_voxels.get(value, 0) for c in fp.cases) / max(total, 1),
                "cases": sum(1 for c in fp.cases if c.class_voxels.get(value, 0) > 0),
            }
            for value in sorted(set(names) | set(fp.label_values()))
        ]
        return out

    def format(self) -> str:
        """The text ``attnseg dataset check`` prints: a summary, then one line per problem."""
        s = self.summary()
        lines = [
            f"dataset {s['path']} ({_LAYOUT_NAMES[s['layout']]}): {s['training_cases']} training case(s), "
            f"{s['test_cases']} test case(s)",
            "channels: " + ", ".join(f"{k}={v}" for k, v in s["channels"].items()),
            "labels: "
            + (
                ", ".join(f"{n}={v}" for n, v in s["labels"].items())
                if s["labels"]
                else "not declared (no dataset.json)"
            ),
        ]
        if "spacing" in s:
            lines.append(f"cases read: {s['cases_read']}")
            order = f" in {CANONICAL} axis order" if s["orientations"] else ""
            if s["spacing_stored"] == "none":  # pictures: a 1 x 1 spacing would read as mm
                lines.append("spacing: not stored (pixels): distances measured on these cases are in pixels")
            else:
                lines.append(_spread_line(f"spacing (mm{order})", s["spacing"], "{:.4g}"))
            lines.append(_spread_line(f"size (voxels{order})", s["size"], "{:.0f}"))
            lines.append(_spread_line("size after crop to non-zero", s["size_after_crop"], "{:.0f}"))
            if s["orientations"]:  # volumes only: a 2-D image has no orientation in the world
                lines.append(
                    "orientation as stored: "
                    + ", ".join(f"{k} ({n} case(s))" for k, n in s["orientations"].items())
                    + f"; every volume is reoriented to {CANONICAL} for planning, training and prediction"
                )
            for entry in s["intensity"]:
                fg, everything = entry["foreground"], entry["all"]
                text = f"intensity {entry['channel']}: all voxels {everything['min']:.4g}..{everything['max']:.4g}"
                text += f" mean {everything['mean']:.4g} sd {everything['std']:.4g}"
                if fg:
                    text += (
                        f"; foreground mean {fg['mean']:.4g} sd {fg['std']:.4g}, 0.5-99.5 percentiles "
                        f"{fg['percentile_00_5']:.4g}..{fg['percentile_99_5']:.4g}"
                    )
                lines.append(text)
            lines.append("classes (voxel fraction, cases present):")
            for c in s["classes"]:
                lines.append(
                    f"  {c['value']:>3} {c['name']:<28} {100 * c['voxel_fraction']:8.4f}%  {c['cases']} case(s)"
                )
        lines.append(f"problems: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        lines.extend(str(p) for p in self.problems)
        return "\n".join(lines)


_LAYOUT_NAMES = {"nnunet": "nnU-Net v2 raw", "msd": "Medical Segmentation Decathlon", "paired": "paired folders"}


def check_dataset(dataset: Dataset | str | Path, *, max_cases: int | None = None) -> CheckReport:
    """Read every training case (or the first ``max_cases``) and every test image; gather problems and stats.

    Raises:
        DataError: only when the folder is not a dataset at all (see :func:`load_dataset`); problems with
            cases are collected in the report instead.
    """
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset, require_cases=False)
    report = CheckReport(dataset=dataset, problems=list(dataset.problems))
    if not dataset.cases:
        report.problems.append(Problem("error", str(dataset.root), no_cases_message(dataset).split(": ", 1)[1]))
    declared = set(dataset.labels.values()) if dataset.labels is not None else None
    num_channels = dataset.num_channels
    stats: list[CaseStats] = []
    samples: list[list[np.ndarray]] = []
    dims: Counter[int] = Counter()
    cases = dataset.cases if max_cases is None else dataset.cases[:max_cases]
    for index, case in enumerate(cases):
        result = _check_case(dataset, case, declared, num_channels, report.problems, index)
        if result is not None:
            case_stats, case_samples, spatial_dims = result
            stats.append(case_stats)
            samples.append(case_samples)
            dims[spatial_dims] += 1
    for case in dataset.test_cases:
        _check_test_case(dataset, case, num_channels, report.problems)
    unstated = [s.id for s in stats if not s.pixel_size_stored]
    if unstated and len(unstated) < len(stats):
        report.problems.append(_mixed_units_problem(dataset, unstated, len(stats)))
    if len(dims) > 1:
        report.problems.append(
            Problem("error", str(dataset.root), f"cases mix spatial dimensions: {dict(dims)} (dims: number of cases)")
        )
    if stats:
        channels = len(stats[0].channel_stats)
        pooled = [
            np.concatenate([s[c] for s in samples if len(s) > c]) if samples else np.zeros(0) for c in range(channels)
        ]
        report.fingerprint = Fingerprint(
            cases=stats, foreground_samples=pooled, spatial_dims=dims.most_common(1)[0][0], num_channels=channels
        )
    return report


def fingerprint_dataset(dataset: Dataset | str | Path) -> Fingerprint:
    """The fingerprint of a dataset that passes the checks; :class:`DataError` with the first error otherwise."""
    report = check_dataset(dataset)
    if report.errors or report.fingerprint is None:
        first = report.errors[0] if report.errors else Problem("error", str(report.dataset.root), "no readable case")
        more = f" (and {len(report.errors) - 1} more; run `attnseg dataset check`)" if len(report.errors) > 1 else ""
        raise DataError(f"{first.path}: {first.message}{more}")
    return report.fingerprint


# ---- one case ----------------------------------------------------------------------------------------
def _check_case(
    dataset: Dataset,
    case: Case,
    declared: set[int] | None,
    num_channels: int | None,
    problems: list[Problem],
    index: int,
) -> tuple[CaseStats, list[np.ndarray], int] | None:
    try:
        image = dataset.read_image(case)
    except DataError as error:
        problems.append(_problem_from(error, case.images[0]))
        return None
    image_ok = _check_image(image, case, num_channels, problems, _ct_channels(dataset))
    if case.label is None:
        expected = f"labelsTr/{case.id}{dataset.file_ending}" if dataset.layout == "nnunet" else "a label file"
        problems.append(Problem("error", str(case.images[0]), f"no label for this image (expected {expected})"))
        return None
    try:
        label = read_label(case.label)
    except DataError as error:
        problems.append(_problem_from(error, case.label))
        return None
    values = _check_label(image, label, declared, problems)
    if values is None or not image_ok:
        return None
    if set(values) <= {0}:
        problems.append(Problem("warning", str(case.label), "label has no foreground voxels"))
    rng = np.random.default_rng(index)
    foreground = _label_as_int(label.array[0]) > 0
    case_samples = [_sample(channel[foreground], rng) for channel in image.array]
    cropped = tuple(int(stop - start) for start, stop in nonzero_bbox(image.array))
    # sizes and spacings in the order planning uses: the canonical voxel order for volumes
    axes = reorientation(image.geometry).axes if image.spatial_dims == 3 else tuple(range(image.spatial_dims))
    stats = CaseStats(
        id=case.id,
        spacing=tuple(float(image.geometry.spacing[a]) for a in axes),
        shape=tuple(image.spatial_shape[a] for a in axes),
        cropped_shape=tuple(cropped[a] for a in axes),
        orientation=image.geometry.orientation(),
        class_voxels=values,
        channel_stats=[_channel_stats(channel) for channel in image.array],
        pixel_size_stored=pixel_size_stored(case.images[0]),
    )
    return stats, case_samples, image.spatial_dims


def _check_test_case(dataset: Dataset, case: Case, num_channels: int | None, problems: list[Problem]) -> None:
    try:
        image = dataset.read_image(case)
    except DataError as error:
        problems.append(_problem_from(error, case.images[0]))
        return
    _check_image(image, case, num_channels, problems, _ct_channels(dataset))


def _check_image(
    image: Image,
    case: Case,
    num_channels: int | None,
    problems: list[Problem],
    ct_channels: frozenset[int] = frozenset(),
) -> bool:
    """Channels as declared, finite intensities, not constant, and (``ct_channels``) in Hounsfield units."""
    ok = True
    if num_channels is not None and image.channels != num_channels:
        problems.append(
            Problem(
                "error", str(case.images[0]), f"{image.channels} channel(s) where dataset.json declares {num_channels}"
            )
        )
        ok = False
    if image.meta.get("alpha_dropped"):  # nothing lost, but a user who meant the alpha as a channel should know
        note = "RGBA picture: its alpha, opaque everywhere, is dropped"
        problems.append(Problem("warning", str(case.images[0]), note))
    for channel, values in enumerate(image.array):
        one_file = len(case.images) == image.channels  # a file per channel, or one file holding them all
        where = str(case.images[channel] if one_file else case.images[0])
        bad = int(values.size - np.count_nonzero(np.isfinite(values))) if values.dtype.kind == "f" else 0
        if bad:
            nan = int(np.count_nonzero(np.isnan(values)))
            problems.append(Problem("error", where, f"{bad} non-finite intensities ({nan} NaN, {bad - nan} inf)"))
            ok = False
        elif _is_constant(values):
            # A warning, not an error: training runs (normalisation clamps the zero spread to a channel of
            # zeros) but learns nothing from it, and a channel zero-filled on purpose (a modality missing for
            # some cases) cannot be told apart from a failed export or a blank series.
            which = "" if one_file or image.channels == 1 else f" (channel {channel})"
            problems.append(Problem("warning", where, f"constant image{which}: every voxel is {values.flat[0]:g}"))
        elif channel in ct_channels and (not_hu := hounsfield_problem(values)):
            problems.append(Problem("warning", where, not_hu))
    return ok


def _ct_channels(dataset: Dataset) -> frozenset[int]:
    """The channels dataset.json names CT (nnU-Net's convention, as the ``ct`` normalisation reads it)."""
    return frozenset(int(c) for c, name in dataset.channel_names.items() if is_ct_channel(str(name)))


def _is_constant(values: np.ndarray) -> bool:
    """Every voxel of the channel holds one value: the whole channel, not a region, so that a scan whose
    background is uniform around the body (most are) is not taken for a blank one."""
    return values.size > 0 and bool(values.min() == values.max())


def _check_label(
    image: Image, label: Image, declared: set[int] | None, problems: list[Problem]
) -> dict[int, int] | None:
    """Shape, geometry and values of a label against its image; class voxel counts when all is well."""
    path = str(label.path)
    if label.spatial_shape != image.spatial_shape:
        problems.append(
            Problem("error", path, f"label shape {label.spatial_shape} differs from image {image.spatial_shape}")
        )
        return None
    diffs = label.geometry.differences(image.geometry, atol=GEOMETRY_ATOL)
    if diffs:
        problems.append(Problem("error", path, "label geometry differs from its image: " + "; ".join(diffs)))
        return None
    array = label.array[0]
    if array.dtype.kind == "f" and not _whole_numbers(array):
        problems.append(Problem("error", path, "label holds non-integer values; labels must be whole numbers"))
        return None
    found = {int(value): count for value, count in value_counts(array).items()}  # whole numbers, checked above
    if declared is not None:
        unknown = sorted(set(found) - declared)
        if unknown:
            message = f"label values {_some(unknown)} are not among the declared labels {_some(sorted(declared))}"
            problems.append(Problem("error", path, message + _full_scale_hint(unknown, declared)))
            return None
    return found


def _full_scale_hint(unknown: list[int], declared: set[int]) -> str:
    """What to do about a binary mask saved as 0/255 (or 0/65535), the commonest way image editors and
    exports store masks. The values are not mapped silently: 255 may just as well be a stray class, and
    the user's own convention is what predictions should be written back in."""
    if len(unknown) != 1 or unknown[0] not in (255, 65535) or len(declared) != 2 or 0 not in declared:
        return ""
    value, target = unknown[0], max(declared)
    return (
        f'; a binary mask saved as 0/{value}? declare the class as {value} in dataset.json\'s "labels" '
        f'(e.g. "lesion": {value} instead of {target}): training learns it as class 1 and predictions are '
        f"written back as 0/{value}"
    )


def _some(values: list[Any], shown: int = 10) -> str:
    """A list for a message: at most ``shown`` values, and how many there are in all."""
    if len(values) <= shown:
        return str(values)
    return f"[{', '.join(map(str, values[:shown]))}, ...] ({len(values)} values)"


def _whole_numbers(array: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(array))) and np.array_equal(array, np.round(array))


def _label_as_int(array: np.ndarray) -> np.ndarray:
    return array if array.dtype.kind in "iub" else np.round(array).astype(np.int64)


def _problem_from(error: DataError, path: Path) -> Problem:
    message = str(error)
    prefix = f"{path}: "
    return Problem("error", str(path), message[len(prefix) :] if message.startswith(prefix) else message)


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    values = values.astype(np.float64, copy=False)
    if values.size > INTENSITY_SAMPLES:
        values = rng.choice(values, INTENSITY_SAMPLES, replace=False)
    return values


def _channel_stats(channel: np.ndarray) -> dict[str, float]:
    values = channel.astype(np.float64, copy=False)
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "voxels": float(values.size),
    }


def _pooled_channel(fp: Fingerprint, channel: int) -> dict[str, float]:
    rows = [c.channel_stats[channel] for c in fp.cases]
    n = np.array([r["voxels"] for r in rows])
    mean = np.array([r["mean"] for r in rows])
    var = np.array([r["std"] ** 2 for r in rows])
    pooled_mean = float((n * mean).sum() / n.sum())
    pooled_var = float((n * (var + (mean - pooled_mean) ** 2)).sum() / n.sum())
    return {
        "min": min(r["min"] for r in rows),
        "max": max(r["max"] for r in rows),
        "mean": pooled_mean,
        "std": pooled_var**0.5,
    }


def _spacing_stored(fp: Fingerprint) -> str:
    """``'all'``, ``'none'`` or ``'some'``: how many cases state their pixel size in mm."""
    stored = sum(c.pixel_size_stored for c in fp.cases)
    return "all" if stored == len(fp.cases) else "none" if stored == 0 else "some"


def _mixed_units_problem(dataset: Dataset, unstated: list[str], read: int) -> Problem:
    """A warning: some cases' spacing is in mm and others' in pixels, so the spacing summary, planning and
    any distance pooled over cases would mix the two."""
    return Problem(
        "warning",
        str(dataset.root),
        f"{len(unstated)} of {read} case(s) store no pixel size (pictures read in pixels, 1 x 1): "
        f"{_some(unstated, 5)}; the others are in mm. The spacing above and distances over all cases mix the "
        "two units (attnseg evaluate refuses to average them)",
    )


def _spread(values: np.ndarray) -> dict[str, list[float]]:
    return {
        "median": np.median(values, axis=0).tolist(),
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
    }


def _spread_line(title: str, spread: Mapping[str, list[float]], fmt: str) -> str:
    def join(v: list[float]) -> str:
        return " x ".join(fmt.format(x) for x in v)

    return f"{title}: median {join(spread['median'])}, min {join(spread['min'])}, max {join(spread['max'])}"


def _channel_list(dataset: Dataset, count: int) -> list[str]:
    names = list(dataset.channel_names.values())
    return names if len(names) == count else [f"channel_{i}" for i in range(count)]
