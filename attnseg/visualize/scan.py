"""``attnseg visualize``: where a trained model looks on one scan, as pictures and as volumes.

1. read the scan and preprocess it with the model's plan, as ``attnseg predict`` does;
2. run the network over it with ``return_attention=True`` (2D models slice by slice, 3D models by
   sliding window), collecting the prediction and every attention map as channels
   (:mod:`attnseg.visualize.network_maps`);
3. put each map back on the scan's own grid with the predictor's inverse
   (:mod:`attnseg.visualize.input_grid`), so it lines up with the scan voxel for voxel;
4. cut the chosen slices (default: those with the most predicted foreground) in radiological
   convention and draw the panels (:mod:`attnseg.visualize.attention_figure`); with ``nifti``, also
   write each map, and each prediction, as a NIfTI volume with the scan's shape and affine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from attnseg.data import CaseProperties, Image, preprocess_case, read_case, write_image
from attnseg.errors import ConfigError
from attnseg.fileio import check_writable
from attnseg.inference.cases import find_cases
from attnseg.inference.postprocess import keep_largest_components
from attnseg.inference.predictor import Predictor
from attnseg.inference.volume import map_preprocessed
from attnseg.visualize.attention_figure import gate_figure, guided_figure
from attnseg.visualize.drawing import save_figure
from attnseg.visualize.input_grid import labels_on_input_grid, maps_on_input_grid
from attnseg.visualize.network_maps import PREDICTION, ChannelLayout, MapChannels
from attnseg.visualize.orientation import SliceView, slice_view
from attnseg.visualize.slices import DEFAULT_COUNT, chosen_slices, most_foreground

# Unbounded maps are shown relative to this percentile of their values over the scan.
RELATIVE_PERCENTILE = 99.5


@dataclass
class Visualization:
    """What ``visualize_scan`` wrote, and what it showed."""

    case_id: str
    family: str  # "gates" (Attention U-Net) or "guided" (multi-scale guided network)
    maps: list[str]
    view: str
    axis: int | None
    slices: list[int | None]
    figures: list[Path] = field(default_factory=list)
    volumes: list[Path] = field(default_factory=list)


def visualize_scan(
    model_dir: str | Path,
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    slices: Sequence[int] | None = None,
    axis: int | None = None,
    count: int = DEFAULT_COUNT,
    nifti: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    batch_size: int | None = None,
) -> Visualization:
    """Draw the attention of the model in ``model_dir`` on one scan and write the pictures to ``output``.

    Args:
        inputs: the scan: an image file, a DICOM series folder, or its channel files (CASE_0000, ...).
        slices: indices along ``axis`` of the scan; None: the ``count`` with the most predicted foreground.
        axis: the scan's voxel axis to cut; None: the axial one (from the scan's direction cosines).
        nifti: also write every map and prediction as ``CASE_<map>.nii.gz`` on the scan's grid.

    Raises:
        ConfigError: the network has no attention maps, or the slices or axis do not fit the scan.
        DataError: the scan cannot be read or does not fit the model (channels, dimensionality).
        OutputExistsError: an output exists and ``overwrite`` is False (checked before anything is written).
    """
    predictor = Predictor([model_dir], device=device, batch_size=batch_size)
    scan = _run_on_scan(predictor, inputs, model_dir)
    view = slice_view(scan.image.geometry, axis)
    most = partial(most_foreground, scan.predictions[PREDICTION], count=count)
    indices = chosen_slices(slices or None, view.axis, scan.image.spatial_shape, most)
    result = Visualization(scan.case_id, scan.family, scan.layout.maps, view.view, view.axis, indices)

    output = Path(output)
    figures = _figure_paths(output, scan.case_id, scan.family, indices)
    names = [*scan.layout.probabilities, *scan.layout.maps] if nifti else []
    volumes = {name: output / f"{scan.case_id}_{_slug(name)}.nii.gz" for name in names}
    for path in [*figures, *volumes.values()]:
        check_writable(path, overwrite)

    planes, result.volumes = _maps_on_scan(scan, view, indices, volumes, overwrite)
    if nifti:
        for name, mask in scan.predictions.items():
            result.volumes.append(write_image(volumes[name], mask[None], scan.image.geometry, overwrite=overwrite))
    model = predictor.models[0].model_dir
    title = f"{scan.case_id}: {model.network_spec().get('name')} ({model.path})"
    _draw_figures(scan, planes, view, indices, figures, predictor.labels, title, overwrite)
    result.figures = figures
    return result


@dataclass
class _Scan:
    """One scan and what the network made of it: ``stack`` holds every channel that ``layout`` names
    (probabilities, then maps) on the preprocessed grid; ``predictions`` are label maps on the scan's grid."""

    case_id: str
    image: Image
    properties: CaseProperties
    stack: np.ndarray
    layout: ChannelLayout
    predictions: dict[str, np.ndarray]

    @property
    def family(self) -> str:
        return "guided" if len(self.layout.probabilities) > 1 else "gates"


def _run_on_scan(predictor: Predictor, inputs: str | Path | Sequence[str | Path], model_dir: str | Path) -> _Scan:
    """Steps 1 and 2, and the predictions of step 3: read and preprocess the scan, run the network with its
    maps as channels, put each prediction back on the scan's grid (post-processed as ``attnseg predict``)."""
    loaded = predictor.models[0]
    cases = find_cases(inputs, predictor.num_channels, predictor.channel_names)
    if len(cases) != 1:
        raise ConfigError(f"give one scan (its channel files, or one DICOM folder); found {len(cases)} cases")
    case_id, paths = cases[0].case_id, cases[0].paths
    image = read_case(paths, one_channel_per_file=False, channels=predictor.num_channels)
    case = preprocess_case(image, loaded.plan)

    channels = MapChannels(loaded.network)
    stack = map_preprocessed(
        channels,
        case.image,
        loaded.plan,
        batch_size=predictor.batch_size,
        overlap=predictor.overlap,
        device=predictor.device,
        autocast_dtype=loaded.runtime.amp_dtype,  # as attnseg predict runs the model
    ).numpy()
    layout = channels.layout
    if layout is None or not layout.maps:
        name = loaded.model_dir.network_spec().get("name")
        raise ConfigError(f"{model_dir}: network '{name}' has no attention maps to show (a plain U-Net?)")
    where = layout.slices()
    predictions = {name: labels_on_input_grid(stack[where[name]], case.properties) for name in layout.probabilities}
    if predictor.largest_component_classes:  # the model's post-processing, as `attnseg predict` applies it
        values = [loaded.plan.class_values[k] for k in predictor.largest_component_classes]
        predictions[PREDICTION] = keep_largest_components(predictions[PREDICTION], values)
    return _Scan(case_id, image, case.properties, stack, layout, predictions)


def _maps_on_scan(
    scan: _Scan, view: SliceView, indices: list[int | None], volumes: dict[str, Path], overwrite: bool
) -> tuple[dict[str, list[np.ndarray]], list[Path]]:
    """Step 3 for the maps, one at a time: each on the scan's grid, written as a volume where ``volumes``
    names one, and cut at ``indices`` for the pictures (gates as they are, the guided network's unbounded
    maps relative to their :data:`RELATIVE_PERCENTILE`). Returns the cuts and the volumes written."""
    planes: dict[str, list[np.ndarray]] = {}
    written = []
    maps = scan.stack[scan.layout.map_channels()]  # a view: no second copy of the maps
    for name, volume in zip(scan.layout.maps, maps_on_input_grid(maps, scan.properties), strict=True):
        if name in volumes:
            written.append(write_image(volumes[name], volume[None], scan.image.geometry, overwrite=overwrite))
        scale = 1.0 if scan.family == "gates" else max(float(np.percentile(volume, RELATIVE_PERCENTILE)), 1e-12)
        planes[name] = [np.clip(view.cut(volume, i) / scale, 0.0, 1.0) for i in indices]
    return planes, written


def _draw_figures(
    scan: _Scan,
    planes: dict[str, list[np.ndarray]],
    view: SliceView,
    indices: list[int | None],
    figures: list[Path],
    labels: Mapping[str, int],
    title: str,
    overwrite: bool,
) -> None:
    """Step 4: gates in one picture with a row per slice; the guided network's scales in one picture per slice."""
    pictures = [view.cut(scan.image.array[0], i) for i in indices]
    cut_predictions = {name: [view.cut(mask, i) for i in indices] for name, mask in scan.predictions.items()}
    if scan.family == "gates":
        figure = gate_figure(pictures, cut_predictions[PREDICTION], planes, view, indices, labels, title=title)
        save_figure(figure, figures[0], overwrite)
        return
    for row, (index, path) in enumerate(zip(indices, figures, strict=True)):
        at_row = {name: p[row] for name, p in planes.items()}
        predicted = {name: p[row] for name, p in cut_predictions.items()}
        figure = guided_figure(pictures[row], at_row, predicted, view, index, labels, title=title)
        save_figure(figure, path, overwrite)


def _figure_paths(output: Path, case_id: str, family: str, indices: list[int | None]) -> list[Path]:
    """Gates: one picture with a row per slice; guided: one picture per slice."""
    if family == "gates" or indices == [None]:
        return [output / f"{case_id}_attention.png"]
    return [output / f"{case_id}_attention_slice{index:03d}.png" for index in indices]


def _slug(name: str) -> str:
    return name.replace(" ", "_")
