"""``attnseg predict``: masks for new scans, on each scan's own grid.

For every input image and every model directory: apply the model's preprocessing plan (resample,
normalise, crop), run the network (2D: batches of slices; 3D: sliding window with Gaussian
blending), optionally with mirroring test-time augmentation, and put the class probabilities back on
the original grid. Models of an ensemble (folds, or different networks with the same labels) are
averaged there. The mask is written with the input's geometry, so it overlays the scan in any viewer.
Masks for DICOM series inputs are ``.nrrd`` files, or, with the output format ``dicom``, DICOM series
in the scan's own study and frame of reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from attnseg.data import Image, Plan, preprocess_case, read_case, read_image, restore_probabilities, write_image
from attnseg.data.dicom import check_series_target, write_dicom_series
from attnseg.data.io import EXTENSIONS, file_ending, is_image_file, strip_ending
from attnseg.device import resolve_device
from attnseg.errors import ConfigError, DataError
from attnseg.fileio import check_writable
from attnseg.inference.volume import predict_preprocessed
from attnseg.model_dir import ModelDir
from attnseg.runtime import Runtime, inference_runtime

CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")
VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")
# The output format that writes each mask as a DICOM series folder (for DICOM series inputs).
DICOM_FORMAT = "dicom"


@dataclass
class LoadedModel:
    model_dir: ModelDir
    network: torch.nn.Module
    plan: Plan
    runtime: Runtime


@dataclass
class InputCase:
    """One scan to segment: its channel files (or a DICOM folder) and the name of its outputs."""

    case_id: str
    paths: tuple[Path, ...]
    ending: str  # the input's file ending, reused for the outputs unless asked otherwise


class Predictor:
    """Segment images with one model directory or an ensemble of them.

    Args:
        model_dirs: one or more directories written by ``attnseg train``; all must share the labels.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        mirror: mirroring test-time augmentation (4 flips in 2D, 8 in 3D): slower, usually a little better.
        batch_size: slices (2D) or windows (3D) per forward pass; None: 4 on a CPU (larger batches
            only add memory traffic there), 16 on a GPU.
        overlap: sliding-window overlap (3D).
        largest_component: keep only the largest connected component of each foreground class.
        amp: mixed precision: ``auto`` runs each model as its training chose on the same kind of device
            (``runtime.json``: layout and precision), else channels-last with fp16 on CUDA and fp32
            elsewhere; ``off``, ``bf16`` or ``fp16`` set the precision.
    """

    def __init__(
        self,
        model_dirs: Sequence[str | Path],
        device: str = "auto",
        mirror: bool = False,
        batch_size: int | None = None,
        overlap: float = 0.5,
        largest_component: bool = False,
        amp: str = "auto",
    ) -> None:
        if not model_dirs:
            raise ConfigError("give at least one model directory")
        self.device = resolve_device(device)
        self.mirror = mirror
        self.batch_size = batch_size or (16 if self.device.type == "cuda" else 4)
        self.overlap = overlap
        self.largest_component = largest_component
        self.amp = amp
        self.models = [self._load(ModelDir(path)) for path in model_dirs]
        self.labels = self.models[0].model_dir.labels()
        for loaded in self.models[1:]:
            if loaded.model_dir.labels() != self.labels:
                raise ConfigError(
                    f"{loaded.model_dir.path}: labels {loaded.model_dir.labels()} differ from "
                    f"{self.models[0].model_dir.path}: {self.labels}; an ensemble needs the same labels"
                )
        self.num_channels = self.models[0].plan.num_channels

    def _load(self, model_dir: ModelDir) -> LoadedModel:
        plan = Plan.from_dict(model_dir.plan())
        network = model_dir.build_network(weights=True, device=self.device)
        runtime = inference_runtime(model_dir.runtime(), self.device, self.amp)
        return LoadedModel(model_dir, runtime.prepare_model(network), plan, runtime)

    # one image ---------------------------------------------------------------------------------

    def predict_image(self, image: Image) -> tuple[np.ndarray, np.ndarray]:
        """(mask (1, *S) of label values, probabilities (K, *S)) on ``image``'s grid."""
        if image.channels != self.num_channels:
            raise DataError(
                f"{image.name}: {image.channels} channel(s), but the model expects {self.num_channels} "
                f"({', '.join(self.models[0].plan.channel_names)})"
            )
        total = None
        for loaded in self.models:
            probabilities = self._probabilities(loaded, image)
            total = probabilities if total is None else total + probabilities
        probabilities = total / len(self.models)
        classes = probabilities.argmax(0)
        if self.largest_component:
            classes = self._keep_largest_components(classes, probabilities.shape[0])
        values = np.asarray(self.models[0].plan.class_values)
        dtype = np.uint8 if values.min() >= 0 and values.max() <= 255 else np.int32
        return values[classes].astype(dtype)[None], probabilities

    def _probabilities(self, loaded: LoadedModel, image: Image) -> np.ndarray:
        plan = loaded.plan
        if image.spatial_dims != plan.image_dims:
            raise DataError(
                f"{image.name}: a {image.spatial_dims}-D image, but the model was trained on {plan.image_dims}-D"
            )
        case = preprocess_case(image, plan)
        probabilities = predict_preprocessed(
            loaded.network,
            case.image,
            plan,
            batch_size=self.batch_size,
            overlap=self.overlap,
            mirror=self.mirror,
            device=self.device,
            autocast_dtype=loaded.runtime.amp_dtype,
        )
        return restore_probabilities(probabilities, case.properties)

    @staticmethod
    def _keep_largest_components(classes: np.ndarray, num_classes: int) -> np.ndarray:
        return keep_largest_components(classes, range(1, num_classes))

    # files ---------------------------------------------------------------------------------------

    def predict_files(
        self,
        inputs: str | Path | Sequence[str | Path],
        output: str | Path,
        overwrite: bool = False,
        save_probabilities: bool = False,
        output_ending: str | None = None,
        progress: bool = True,
    ) -> list[Path]:
        """Segment every case found in ``inputs`` and write ``OUTPUT/<case><ending>``; returns the masks.

        ``output_ending`` is a file ending (``.nii.gz``, ``.nrrd``...; default: the input's, ``.nrrd`` for
        DICOM series) or ``"dicom"``: for DICOM series inputs only, each mask becomes a DICOM series folder
        ``OUTPUT/<case>`` in the scan's study (see :func:`~attnseg.data.dicom.write_dicom_series`; its
        probabilities, if asked for, go to ``.nrrd``). Every output path is checked before the first case
        runs, so a refused overwrite costs nothing.
        """
        cases = find_cases(inputs, self.num_channels)
        output = Path(output)
        plans = [self._output_paths(case, output, output_ending, save_probabilities) for case in cases]
        dicom = output_ending == DICOM_FORMAT
        for mask_path, probability_path in plans:
            (check_series_target if dicom else check_writable)(mask_path, overwrite)
            if probability_path is not None:
                check_writable(probability_path, overwrite)
        written = []
        for case, (mask_path, probability_path) in tqdm(
            list(zip(cases, plans, strict=True)), desc="predict", unit="case", disable=not progress
        ):
            image = read_image(case.paths[0]) if len(case.paths) == 1 else read_case(case.paths)
            mask, probabilities = self.predict_image(image)
            self._write_mask(mask_path, mask, image, overwrite, dicom)
            if probability_path is not None:
                write_image(probability_path, probabilities, image.geometry, overwrite=overwrite)
            written.append(mask_path)
        return written

    def _write_mask(self, path: Path, mask: np.ndarray, image: Image, overwrite: bool, dicom: bool) -> None:
        """A file with the image's geometry, or a DICOM series in the image's study (``dicom``)."""
        if not dicom:
            write_image(path, mask, image.geometry, overwrite=overwrite)
            return
        description = f"attnseg mask ({self.models[0].model_dir.path.resolve().name})"
        write_dicom_series(
            path, mask, image.geometry, overwrite=overwrite, reference=image, series_description=description
        )

    @staticmethod
    def _output_paths(
        case: InputCase, output: Path, ending: str | None, save_probabilities: bool
    ) -> tuple[Path, Path | None]:
        ending = ending or case.ending
        if ending == DICOM_FORMAT:
            return _dicom_output_paths(case, output, save_probabilities)
        if ending not in EXTENSIONS:
            raise ConfigError(f"output format {ending!r} is not one of {', '.join(EXTENSIONS)} or {DICOM_FORMAT}")
        probabilities = None
        if save_probabilities:
            probability_ending = ending if ending in VOLUME_ENDINGS else ".nii.gz"
            probabilities = output / f"{case.case_id}_probabilities{probability_ending}"
        return output / f"{case.case_id}{ending}", probabilities


def _dicom_output_paths(case: InputCase, output: Path, save_probabilities: bool) -> tuple[Path, Path | None]:
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
    return folder, probabilities


def keep_largest_components(classes: np.ndarray, foreground: Iterable[int]) -> np.ndarray:
    """Keep the largest face-connected component of each foreground class; the rest becomes background (0)."""
    out = classes.copy()
    for value in foreground:
        components, count = ndimage.label(classes == value)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            out[(components > 0) & (components != sizes.argmax())] = 0
    return out


def find_cases(inputs: str | Path | Sequence[str | Path], num_channels: int) -> list[InputCase]:
    """The cases in ``inputs``: image files, folders of image files, or DICOM series folders.

    Files named nnU-Net style (``case_0000.nii.gz``, ``case_0001.nii.gz``) are grouped into one case
    with as many channels; a DICOM series becomes one case named after its folder (masks as ``.nrrd``
    unless the output format is ``dicom``).
    """
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    files: list[Path] = []
    cases: list[InputCase] = []
    for path in paths:
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if is_image_file(p))
            if images:
                files += images
            else:  # no image files: a DICOM series (read_image reports what is wrong if it is not one)
                cases.append(InputCase(path.name, (path,), ".nrrd"))
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


def _group_channels(files: Iterable[Path], num_channels: int) -> list[InputCase]:
    groups: dict[str, dict[int, Path]] = {}
    for path in files:
        stem = strip_ending(path)
        match = CHANNEL_SUFFIX.search(stem)
        case_id, channel = (stem[: match.start()], int(match.group(1))) if match else (stem, 0)
        if match is None and num_channels > 1:
            raise DataError(
                f"{path}: the model needs {num_channels} channels; name the files CASE_0000, CASE_0001, ..."
            )
        groups.setdefault(case_id, {})
        if channel in groups[case_id]:
            raise DataError(f"{path}: channel {channel} of case '{case_id}' given twice")
        groups[case_id][channel] = path
    cases = []
    for case_id, channels in sorted(groups.items()):
        if sorted(channels) != list(range(num_channels)):
            raise DataError(
                f"case '{case_id}': channel files {sorted(channels)} found, the model needs 0..{num_channels - 1}"
            )
        ordered = tuple(channels[c] for c in range(num_channels))
        cases.append(InputCase(case_id, ordered, file_ending(ordered[0])))
    return cases
