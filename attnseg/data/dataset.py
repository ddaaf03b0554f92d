"""Dataset layouts: nnU-Net v2 raw (native), the Medical Segmentation Decathlon, and paired folders.

nnU-Net v2 raw (``attnseg dataset prepare`` writes this)::

    Dataset/
      dataset.json        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
                           "numTraining": 12, "file_ending": ".nii.gz"}
      imagesTr/case_001_0000.nii.gz   one file per channel: _0000, _0001, ...
                          (pictures: or one colour file _0000 holding them all, see attnseg.data.colour)
      labelsTr/case_001.nii.gz
      imagesTs/case_101_0000.nii.gz   optional, unlabelled
      splits.json         optional: [{"train": [...], "val": [...]}, ...] (nnU-Net's splits_final.json format)

Medical Segmentation Decathlon: ``dataset.json`` with ``"modality"``, ``"labels"`` (value -> name) and a
``"training"`` list of ``{"image", "label"}`` paths; several modalities share one 4-D NIfTI.

Paired folders: ``images/`` and ``labels/`` (or ``masks/``), matched by file name; a label may carry a
``_seg``, ``_label``, ``_mask`` or ``_gt`` suffix. An optional ``dataset.json`` declares labels and channel names
as nnU-Net's does; without one the labels are whatever values the label files hold.

Loading only looks at names; reading pixels is the job of :func:`Dataset.read_case` and of the checks.
Problems a listing reveals (a missing channel file, a label without an image) are kept in
:attr:`Dataset.problems` for ``attnseg dataset check`` to report with the rest.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from attnseg.data.io import (
    Image,
    file_ending,
    is_image_file,
    is_picture,
    read_case,
    read_image,
    read_label,
    strip_ending,
)
from attnseg.errors import DataError
from attnseg.fileio import read_json

Layout = Literal["nnunet", "msd", "paired"]
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
LABEL_SUFFIXES = ("_seg", "_label", "_labels", "_mask", "_gt")
# What a case lacking one of its channel files is told, by `dataset check` and by `predict` alike.
MISSING_CHANNEL_FILE = "missing channel file"
LAYOUT_HELP = (
    "expected an nnU-Net dataset (dataset.json, imagesTr/, labelsTr/), a Decathlon dataset (dataset.json with "
    "'training') or paired folders (images/ and labels/)"
)


@dataclass(frozen=True)
class Case:
    """One case: its id, its image file(s) (one per channel, or one multi-channel file), its label or None."""

    id: str
    images: tuple[Path, ...]
    label: Path | None = None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: ``level`` is ``"error"`` or ``"warning"``."""

    level: Literal["error", "warning"]
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.path}: {self.message}"


@dataclass
class Dataset:
    """A dataset on disk, by layout. ``labels`` maps name -> value (None: undeclared, paired layout only)."""

    root: Path
    layout: Layout
    cases: list[Case]
    test_cases: list[Case] = field(default_factory=list)
    labels: dict[str, int] | None = None
    channel_names: dict[str, str] = field(default_factory=dict)
    file_ending: str = ".nii.gz"
    name: str = ""
    problems: list[Problem] = field(default_factory=list)

    @property
    def splits_path(self) -> Path:
        """Where the case-level folds live: ``ROOT/splits.json`` (nnU-Net's list of ``{"train", "val"}``)."""
        return self.root / "splits.json"

    @property
    def num_channels(self) -> int | None:
        return len(self.channel_names) or None

    @property
    def case_ids(self) -> list[str]:
        return [c.id for c in self.cases]

    def case(self, case_id: str) -> Case:
        for case in (*self.cases, *self.test_cases):
            if case.id == case_id:
                return case
        raise DataError(f"{self.root}: no case '{case_id}'")

    def read_image(self, case: Case | str) -> Image:
        """A case's image, channels stacked, read as the layout requires (nnU-Net: one 1-channel file each)."""
        if isinstance(case, str):
            case = self.case(case)
        if self.layout == "msd":  # the Decathlon stores modalities along a 4th axis of one file
            return read_image(case.images[0])
        # nnU-Net: one 3-D file per channel, or one colour picture; paired folders may hold a multi-channel
        # file (RGB, 4-D)
        return read_case(case.images, one_channel_per_file=self.layout == "nnunet", channels=self.num_channels)

    def read_case(self, case: Case | str) -> tuple[Image, Image | None]:
        """Read a case's image (channels stacked) and its label (None when the case has none)."""
        if isinstance(case, str):
            case = self.case(case)
        label = read_label(case.label) if case.label is not None else None
        return self.read_image(case), label


def load_dataset(path: str | Path, *, require_cases: bool = True) -> Dataset:
    """Recognise the layout under ``path`` (a dataset folder or its dataset.json) and list its cases.

    ``require_cases=False`` returns a dataset without a complete case (``attnseg dataset check`` then
    reports every problem that explains why); otherwise that is an error which lists those problems.

    Raises:
        DataError: no such folder, an empty folder, no recognisable layout, a malformed dataset.json, or
            (with ``require_cases``) no complete training case.
    """
    path = Path(path)
    if path.is_file() and path.name == "dataset.json":
        path = path.parent
    if not path.exists():
        raise DataError(f"{path}: no such folder")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder; {LAYOUT_HELP}")
    if not any(p for p in path.iterdir() if not p.name.startswith(".")):
        raise DataError(f"{path}: empty folder; {LAYOUT_HELP}")
    spec = read_json(path / "dataset.json") if (path / "dataset.json").exists() else None
    if spec is not None and "training" in spec:
        dataset = _load_msd(path, spec)
    elif _paired_folders(path) is not None:
        dataset = _load_paired(path, spec)
    elif spec is not None:
        dataset = _load_nnunet(path, spec)
    elif (path / "imagesTr").is_dir():
        raise DataError(f"{path / 'dataset.json'}: missing; an nnU-Net dataset declares its channels and labels there")
    else:
        raise DataError(f"{path}: no dataset found; {LAYOUT_HELP}")
    if require_cases and not dataset.cases:
        raise DataError(no_cases_message(dataset))
    return dataset


def no_cases_message(dataset: Dataset) -> str:
    """Why a dataset has no complete training case, naming the files or folders at fault."""
    errors = [p for p in dataset.problems if p.level == "error"]
    text = f"{dataset.root}: no complete training case ({dataset.layout} layout)"
    if not errors:
        return text
    shown = "; ".join(f"{p.path}: {p.message}" for p in errors[:3])
    more = f"; and {len(errors) - 3} more (attnseg dataset check lists them)" if len(errors) > 3 else ""
    return f"{text}: {shown}{more}"


def parse_labels(spec: Mapping[str, Any], source: Path) -> dict[str, int]:
    """nnU-Net's ``{"name": value}``; the Decathlon's ``{"value": "name"}`` is recognised and turned round."""
    raw = spec.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise DataError(f'{source}: \'labels\' must map label names to values, e.g. {{"background": 0, "tumour": 1}}')
    if all(isinstance(k, str) and k.lstrip("-").isdigit() for k in raw) and all(
        isinstance(v, str) for v in raw.values()
    ):
        labels = {str(name): int(value) for value, name in raw.items()}
    else:
        labels = {}
        for name, value in raw.items():
            if isinstance(value, list | tuple):
                raise DataError(
                    f"{source}: region-based label '{name}': {value} is not supported; use one value a label"
                )
            try:
                labels[str(name)] = int(value)
            except (TypeError, ValueError) as error:
                raise DataError(f"{source}: label '{name}' has value {value!r}; expected an integer") from error
    values = list(labels.values())
    if len(set(values)) != len(values):
        raise DataError(f"{source}: two labels share one value: {labels}")
    if 0 not in values:
        raise DataError(f'{source}: no label has value 0; declare the background, e.g. "background": 0')
    return dict(sorted(labels.items(), key=lambda item: item[1]))


def _channel_names(spec: Mapping[str, Any], key: str, source: Path) -> dict[str, str]:
    raw = spec.get(key)
    if not isinstance(raw, dict) or not raw:
        raise DataError(f'{source}: \'{key}\' must map channel numbers to names, e.g. {{"0": "CT"}}')
    names = {str(k): str(v) for k, v in raw.items()}
    if sorted(int(k) for k in names) != list(range(len(names))):
        raise DataError(f"{source}: channels in '{key}' must be numbered 0, 1, 2, ...; got {sorted(names)}")
    return dict(sorted(names.items(), key=lambda item: int(item[0])))


def declared_channel_names(folder: str | Path) -> tuple[Path, list[str]] | None:
    """The channel names that the dataset.json in ``folder`` or beside it (an nnU-Net ``imagesTs`` sits
    next to its dataset.json) declares, in channel order, with that file; None where there is none or it
    names no channels. Prediction compares them with the model's: file ``CASE_000k`` is read as the
    model's channel k, and nothing in the voxels says that a T2 was put where the model wants a T1ce."""
    folder = Path(folder)
    for source in (folder / "dataset.json", folder.parent / "dataset.json"):
        if not source.is_file():
            continue
        spec = read_json(source)
        key = next((k for k in ("channel_names", "modality") if isinstance(spec, dict) and k in spec), None)
        return None if key is None else (source, list(_channel_names(spec, key, source).values()))
    return None


# ---- nnU-Net v2 ------------------------------------------------------------------------------------
def _load_nnunet(root: Path, spec: dict[str, Any]) -> Dataset:
    source = root / "dataset.json"
    labels = parse_labels(spec, source)
    channels = _channel_names(spec, "channel_names", source)
    ending = spec.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise DataError(f"{source}: 'file_ending' must be given, e.g. \".nii.gz\"")
    file_ending(f"x{ending}")  # raises on an unsupported ending
    problems: list[Problem] = []
    incomplete: set[str] = set()
    if "dataset" in spec:  # nnU-Net v2's explicit case list, for files that live elsewhere
        cases = _explicit_cases(root, spec["dataset"], source)
        test_cases: list[Case] = []
    else:
        cases = _channel_cases(root / "imagesTr", ending, len(channels), problems, incomplete)
        label_dir = root / "labelsTr"
        labelled = _label_files(label_dir, ending, problems)
        cases = [Case(c.id, c.images, labelled.pop(c.id, None)) for c in cases]
        for case_id in incomplete:  # already reported as missing a channel file
            labelled.pop(case_id, None)
        for orphan in labelled.values():
            problems.append(Problem("error", str(orphan), "label without an image in imagesTr"))
        test_dir = root / "imagesTs"
        test_cases = _channel_cases(test_dir, ending, len(channels), problems) if test_dir.is_dir() else []
    declared = spec.get("numTraining")
    found = len(cases) + len(incomplete)
    if isinstance(declared, int) and declared != found:  # an error in nnU-Net too
        problems.append(Problem("error", str(source), f"numTraining is {declared} but {found} case(s) were found"))
    return Dataset(
        root=root,
        layout="nnunet",
        cases=cases,
        test_cases=test_cases,
        labels=labels,
        channel_names=channels,
        file_ending=ending,
        name=str(spec.get("name", root.name)),
        problems=problems,
    )


def _channel_cases(
    folder: Path, ending: str, num_channels: int, problems: list[Problem], incomplete: set[str] | None = None
) -> list[Case]:
    """Group ``CASE_XXXX<ending>`` files by case; every case needs channels 0..num_channels-1, or, for
    pictures, one colour file ``_0000`` holding them all (its pixels are checked when it is read)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: missing (nnU-Net keeps training images in imagesTr/)")
    grouped: dict[str, dict[int, Path]] = defaultdict(dict)
    files = _visible_files(folder)
    if not files:
        problems.append(Problem("error", str(folder), f"empty folder: expected image files CASE_0000{ending}"))
    for path in files:
        if not path.name.endswith(ending):
            problems.append(_stray_file(path, ending, looks_like_case=_looks_like_image(path)))
            continue
        match = CHANNEL_SUFFIX.match(path.name[: -len(ending)])
        if match is None:
            problems.append(
                Problem("error", str(path), "image name lacks the channel suffix (_0000, _0001, ...) nnU-Net requires")
            )
            continue
        grouped[match["case"]][int(match["channel"])] = path
    cases = []
    picture = is_picture(ending)
    for case_id, files in sorted(grouped.items()):
        if picture and list(files) == [0] and num_channels > 1:  # one colour picture holding every channel
            cases.append(Case(case_id, (files[0],)))
            continue
        missing = [c for c in range(num_channels) if c not in files]
        extra = sorted(c for c in files if c >= num_channels)
        for c in missing:
            problems.append(Problem("error", str(channel_file(folder, case_id, c, ending)), MISSING_CHANNEL_FILE))
        for c in extra:
            problems.append(
                Problem("error", str(files[c]), f"channel {c} is not declared in dataset.json (has {num_channels})")
            )
        if missing:
            if incomplete is not None:
                incomplete.add(case_id)
            continue
        cases.append(Case(case_id, tuple(files[c] for c in range(num_channels))))
    return cases


def channel_file(folder: Path, case_id: str, channel: int, ending: str) -> Path:
    """``FOLDER/CASE_XXXX<ending>``: nnU-Net's name for one channel of a case (named even when it is missing)."""
    return folder / f"{case_id}_{channel:04d}{ending}"


def _label_files(folder: Path, ending: str, problems: list[Problem]) -> dict[str, Path]:
    if not folder.is_dir():
        problems.append(Problem("error", str(folder), "missing: nnU-Net keeps training labels in labelsTr/"))
        return {}
    files = _visible_files(folder)
    if not files:
        problems.append(Problem("error", str(folder), f"empty folder: expected label files CASE{ending}"))
    labels = {}
    for path in files:
        if not path.name.endswith(ending):
            problems.append(_stray_file(path, ending, looks_like_case=_looks_like_image(path)))
            continue
        labels[path.name[: -len(ending)]] = path
    return labels


def _visible_files(folder: Path) -> list[Path]:
    """The files a listing considers: not hidden, and not the data half of a MetaImage ``.mhd`` pair."""
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and not _metaimage_data(p)]


def _metaimage_data(path: Path) -> bool:
    return path.suffix.lower() in (".raw", ".zraw") and path.with_suffix(".mhd").exists()


def _looks_like_image(path: Path) -> bool:
    """An image file in a format attnseg reads, or a name shaped like an nnU-Net case (``CASE_0000.xyz``)."""
    return is_image_file(path) or path.is_dir() or CHANNEL_SUFFIX.match(path.name.split(".", 1)[0]) is not None


def _stray_file(path: Path, ending: str, looks_like_case: bool) -> Problem:
    """A file the dataset's ``file_ending`` excludes: an error when it looks like a case that would be
    silently left out of training (``case_0000.nii`` in a ``.nii.gz`` dataset), a warning otherwise."""
    if looks_like_case:
        return Problem(
            "error",
            str(path),
            f"looks like a case but does not end with the dataset's file_ending '{ending}', so it would be "
            f"left out; convert it to {ending} or remove it",
        )
    return Problem("warning", str(path), f"ignored: not an image ending with the dataset's '{ending}'")


def _explicit_cases(root: Path, listing: Any, source: Path) -> list[Case]:
    if not isinstance(listing, dict):
        raise DataError(f"{source}: 'dataset' must map case ids to {{'images': [...], 'label': ...}}")
    cases = []
    for case_id, entry in sorted(listing.items()):
        try:
            images = tuple(_resolve(root, p) for p in entry["images"])
            label = _resolve(root, entry["label"]) if entry.get("label") else None
        except (KeyError, TypeError) as error:
            raise DataError(f"{source}: case '{case_id}' needs 'images' (a list) and 'label'") from error
        cases.append(Case(str(case_id), images, label))
    return cases


def _resolve(root: Path, relative: str) -> Path:
    path = Path(relative)
    return path if path.is_absolute() else (root / path).resolve()


# ---- Medical Segmentation Decathlon ----------------------------------------------------------------
def _load_msd(root: Path, spec: dict[str, Any]) -> Dataset:
    source = root / "dataset.json"
    labels = parse_labels(spec, source)
    channels = _channel_names(spec, "modality", source) if "modality" in spec else {"0": "image"}
    problems: list[Problem] = []
    cases = []
    if not isinstance(spec["training"], list):
        raise DataError(f"{source}: 'training' must be a list of {{'image': ..., 'label': ...}}")
    for entry in spec["training"]:
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{source}: each 'training' entry needs 'image' and 'label', got {entry!r}")
        image = _resolve(root, entry["image"])
        label = _resolve(root, entry["label"]) if entry.get("label") else None
        if not image.exists():
            problems.append(Problem("error", str(image), "listed in dataset.json but missing"))
            continue
        if label is not None and not label.exists():
            problems.append(Problem("error", str(label), "listed in dataset.json but missing"))
            label = None
        cases.append(Case(strip_ending(image), (image,), label))
    test_cases = []
    for entry in spec.get("test", []) or []:
        image = _resolve(root, entry if isinstance(entry, str) else entry.get("image", ""))
        if image.exists():
            test_cases.append(Case(strip_ending(image), (image,)))
        else:
            problems.append(Problem("warning", str(image), "test image listed in dataset.json but missing"))
    endings = Counter(file_ending(c.images[0]) for c in cases)
    return Dataset(
        root=root,
        layout="msd",
        cases=cases,
        test_cases=test_cases,
        labels=labels,
        channel_names=channels,
        file_ending=endings.most_common(1)[0][0] if endings else ".nii.gz",
        name=str(spec.get("name", root.name)),
        problems=problems,
    )


# ---- paired folders --------------------------------------------------------------------------------
def _paired_folders(root: Path) -> tuple[Path, Path] | None:
    images = root / "images"
    for name in ("labels", "masks"):
        if images.is_dir() and (root / name).is_dir():
            return images, root / name
    return None


def _load_paired(root: Path, spec: dict[str, Any] | None) -> Dataset:
    image_dir, label_dir = _paired_folders(root)  # type: ignore[misc]
    problems: list[Problem] = []
    image_files = [p for p in sorted(image_dir.iterdir()) if not p.name.startswith(".")]
    for path in image_files:
        if not is_image_file(path) and not path.is_dir() and not path.name.lower().endswith((".raw", ".zraw")):
            problems.append(Problem("warning", str(path), "ignored: not a supported image file"))
    # A sub-folder of images/ is a DICOM series: one case, named after the folder.
    image_files = [p for p in image_files if is_image_file(p) or p.is_dir()]
    stems = {p: p.name if p.is_dir() else strip_ending(p) for p in image_files}
    channel_style = bool(stems) and all(CHANNEL_SUFFIX.match(s) for s in stems.values())
    grouped: dict[str, list[Path]] = defaultdict(list)
    for path, stem in stems.items():
        grouped[CHANNEL_SUFFIX.match(stem)["case"] if channel_style else stem].append(path)  # type: ignore[index]
    labels_by_id: dict[str, Path] = {}
    for path in sorted(label_dir.iterdir()):
        if not is_image_file(path):
            continue
        stem = strip_ending(path)
        for suffix in LABEL_SUFFIXES:
            if stem.endswith(suffix) and stem[: -len(suffix)] in grouped:
                stem = stem[: -len(suffix)]
                break
        labels_by_id[stem] = path
    cases = [Case(cid, tuple(sorted(files)), labels_by_id.pop(cid, None)) for cid, files in sorted(grouped.items())]
    for orphan in labels_by_id.values():
        problems.append(Problem("error", str(orphan), f"label without an image in {image_dir.name}/"))
    labels = parse_labels(spec, root / "dataset.json") if spec and "labels" in spec else None
    if spec and "channel_names" in spec:
        channels = _channel_names(spec, "channel_names", root / "dataset.json")
    else:
        count = max((len(f) for f in grouped.values()), default=1)
        channels = {str(i): f"channel_{i}" for i in range(count)}
    endings = Counter(file_ending(p) for p in image_files if p.is_file())
    return Dataset(
        root=root,
        layout="paired",
        cases=cases,
        labels=labels,
        channel_names=channels,
        file_ending=endings.most_common(1)[0][0] if endings else ".nii.gz",
        name=root.name,
        problems=problems,
    )
