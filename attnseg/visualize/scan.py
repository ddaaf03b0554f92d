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

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnseg.data import preprocess_case, read_case, read_image, write_image
from attnseg.errors import ConfigError
from attnseg.fileio import check_writable
from attnseg.inference.cases import find_cases
from attnseg.inference.postprocess import keep_largest_components
from attnseg.inference.predictor import Predictor
from attnseg.inference.volume import map_preprocessed
from attnseg.visualize.attention_figure import gate_figure, guided_figure
from attnseg.visualize.drawing import save_figure
from attnseg.visualize.input_grid import labels_on_input_grid, maps_on_input_grid
from attnseg.visualize.network_maps import PREDICTION, MapChannels
from attnseg.visualize.orientation import slice_view
from attnseg.visualize.slices import DEFAULT_COUNT, check_slices, most_foreground

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
    loaded = predictor.models[0]
    cases = find_cases(inputs, predictor.num_channels)
    if len(cases) != 1:
        raise ConfigError(f"give one scan (its channel files, or one DICOM folder); found {len(cases)} cases")
    case_id, paths = cases[0].case_id, cases[0].paths
    image = read_image(paths[0]) if len(paths) == 1 else read_case(paths)
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
    family = "guided" if len(layout.probabilities) > 1 else "gates"
    where = layout.slices()
    predictions = {name: labels_on_input_grid(stack[where[name]], case.properties) for name in layout.probabilities}
    if predictor.largest_component_classes:  # the model's post-processing, as `attnseg predict` applies it
        values = [loaded.plan.class_values[k] for k in predictor.largest_component_classes]
        predictions[PREDICTION] = keep_largest_components(predictions[PREDICTION], values)

    view = slice_view(image.geometry, axis)
    if view.axis is None:
        indices: list[int | None] = [None]
    elif slices:
        indices = list(check_slices(slices, image.spatial_shape[view.axis], view.axis))
    else:
        indices = list(most_foreground(predictions[PREDICTION], view.axis, count))
    result = Visualization(case_id, family, layout.maps, view.view, view.axis, indices)

    output = Path(output)
    figures = _figure_paths(output, case_id, family, indices)
    volumes = {name: output / f"{case_id}_{_slug(name)}.nii.gz" for name in [*layout.probabilities, *layout.maps]}
    for path in [*figures, *(volumes.values() if nifti else [])]:
        check_writable(path, overwrite)

    planes: dict[str, list[np.ndarray]] = {}
    maps = stack[layout.map_channels()]  # a view: no second copy of the maps
    for name, volume in zip(layout.maps, maps_on_input_grid(maps, case.properties), strict=True):
        if nifti:
            result.volumes.append(write_image(volumes[name], volume[None], image.geometry, overwrite=overwrite))
        scale = 1.0 if family == "gates" else max(float(np.percentile(volume, RELATIVE_PERCENTILE)), 1e-12)
        planes[name] = [np.clip(view.cut(volume, i) / scale, 0.0, 1.0) for i in indices]
    if nifti:
        for name, labels in predictions.items():
            result.volumes.append(write_image(volumes[name], labels[None], image.geometry, overwrite=overwrite))

    pictures = [view.cut(image.array[0], i) for i in indices]
    cut_predictions = {name: [view.cut(labels, i) for i in indices] for name, labels in predictions.items()}
    title = f"{case_id}: {loaded.model_dir.network_spec().get('name')} ({loaded.model_dir.path})"
    if family == "gates":
        figure = gate_figure(
            pictures, cut_predictions[PREDICTION], planes, view, indices, predictor.labels, title=title
        )
        save_figure(figure, figures[0], overwrite)
    else:
        for row, (index, path) in enumerate(zip(indices, figures, strict=True)):
            at_row = {name: p[row] for name, p in planes.items()}
            predicted = {name: p[row] for name, p in cut_predictions.items()}
            figure = guided_figure(pictures[row], at_row, predicted, view, index, predictor.labels, title=title)
            save_figure(figure, path, overwrite)
    result.figures = figures
    return result


def _figure_paths(output: Path, case_id: str, family: str, indices: list[int | None]) -> list[Path]:
    """Gates: one picture with a row per slice; guided: one picture per slice."""
    if family == "gates" or indices == [None]:
        return [output / f"{case_id}_attention.png"]
    return [output / f"{case_id}_attention_slice{index:03d}.png" for index in indices]


def _slug(name: str) -> str:
    return name.replace(" ", "_")
