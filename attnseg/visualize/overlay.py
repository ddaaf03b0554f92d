"""Prediction against reference, drawn so that a reader sees at once where they differ.

One row per slice, three panels: the image alone (the anatomy, unobscured); the reference (solid) and
the prediction (dashed) outlined per class in the class's colour; and the errors filled in (missed:
reference only, extra: prediction only, wrong class). A legend names every class and error kind. By
default the rows are the slices where prediction and reference disagree most, shown in radiological
convention with pixels shaped by the voxel spacing (see :mod:`attnseg.visualize.orientation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attnseg.data.geometry import Geometry
from attnseg.visualize.drawing import (
    class_legend,
    draw_contours,
    draw_edges,
    draw_errors,
    draw_image,
    error_legend,
    panel_width,
    save_figure,
    window,
)
from attnseg.visualize.orientation import SliceView, slice_view
from attnseg.visualize.slices import DEFAULT_COUNT, chosen_slices, most_disagreement

LINE_STYLES = {"reference": "-", "prediction": (0, (2.5, 1.5))}  # short dashes stay visible on tight curves
OVERLAY_INCHES = 4.0  # taller panels than the attention pictures: outlines of two masks must be told apart


def save_comparison(
    image: np.ndarray,
    reference: np.ndarray,
    prediction: np.ndarray,
    labels: Mapping[str, int],
    path: str | Path,
    *,
    geometry: Geometry | None = None,
    slices: Sequence[int] | None = None,
    axis: int | None = None,
    count: int = DEFAULT_COUNT,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Write :func:`comparison_figure` as a PNG (atomically; an existing file only with ``overwrite``)."""
    figure = comparison_figure(
        image, reference, prediction, labels, geometry=geometry, slices=slices, axis=axis, count=count, title=title
    )
    return save_figure(figure, path, overwrite)


def comparison_figure(
    image: np.ndarray,
    reference: np.ndarray,
    prediction: np.ndarray,
    labels: Mapping[str, int],
    *,
    geometry: Geometry | None = None,
    slices: Sequence[int] | None = None,
    axis: int | None = None,
    count: int = DEFAULT_COUNT,
    title: str = "",
) -> Figure:
    """Draw ``prediction`` against ``reference`` over ``image``, one row per slice.

    Args:
        image, reference, prediction: arrays on one grid, (X, Y) or (X, Y, Z) (one channel, label values).
        labels: class name -> label value (the legend's names).
        geometry: the grid's geometry (orientation and aspect ratio); None: unit spacing, identity axes.
        slices: indices along ``axis``; None: the ``count`` slices where the masks disagree most.
        axis: the voxel axis to cut; None: the axial one (ignored for 2-D images).
    """
    image, reference, prediction = (np.asarray(a) for a in (image, reference, prediction))
    if not image.shape == reference.shape == prediction.shape:
        raise ValueError(
            f"image {image.shape}, reference {reference.shape} and prediction {prediction.shape} must share a grid"
        )
    geometry = geometry or Geometry.identity(image.ndim)
    view = slice_view(geometry, axis)
    chosen = chosen_slices(
        slices, view.axis, image.shape, partial(most_disagreement, prediction, reference, count=count)
    )
    planes = [(view.cut(image, i), view.cut(reference, i), view.cut(prediction, i)) for i in chosen]
    width = panel_width(planes[0][0].shape, view.aspect, OVERLAY_INCHES)
    figure = Figure(figsize=(3 * width, len(planes) * OVERLAY_INCHES * 1.1 + 0.7), layout="constrained")
    axes = figure.subplots(len(planes), 3, squeeze=False)
    value_range = window(image)
    low, high = value_range
    dimmed = (low, low + 2.5 * (high - low))  # the error panel's image, darker, so every error colour stands out
    for row, (index, plane) in enumerate(zip(chosen, planes, strict=True)):
        _draw_row(axes[row], index, plane, view, labels, value_range, dimmed)
    handles = class_legend(labels, LINE_STYLES) + error_legend()
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False, fontsize=9)
    if view.axis is not None and slices is None:
        title = f"{title}: " if title else ""
        which = f"{view.view} slice" if len(chosen) == 1 else f"{len(chosen)} {view.view} slices"
        title += f"the {which} where prediction and reference disagree most"
    if title:
        figure.suptitle(title)
    return figure


def _draw_row(
    axes: Sequence[Axes],
    index: int | None,
    plane: tuple[np.ndarray, np.ndarray, np.ndarray],
    view: SliceView,
    labels: Mapping[str, int],
    value_range: tuple[float, float],
    dimmed: tuple[float, float],
) -> None:
    """One slice's three panels: the image; both outlines; the errors, over a darker image."""
    picture, ref, pred = plane
    draw_image(axes[0], picture, view, value_range)
    draw_image(axes[1], picture, view, value_range)
    draw_image(axes[2], picture, view, dimmed)
    draw_edges(axes[0], view)
    draw_contours(axes[1], ref, labels, LINE_STYLES["reference"], linewidth=1.2)
    draw_contours(axes[1], pred, labels, LINE_STYLES["prediction"], linewidth=1.2)
    draw_errors(axes[2], pred, ref, view.aspect)
    where = "" if index is None else f"{view.view} slice {index}: "
    axes[0].set_title(f"{where}image", fontsize=9)
    axes[1].set_title("reference (solid), prediction (dashed)", fontsize=9)
    axes[2].set_title(f"errors: {int(np.count_nonzero(ref != pred))} voxels differ", fontsize=9)
