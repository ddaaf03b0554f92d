"""A DICOM SEG drawn over its source series, from the two sets of files alone: what a viewer would show.

The series is read as a volume (:func:`attnseg.data.dicom.read_dicom_series` via ``read_image``), the SEG
is placed onto the series' grid by its frames' own positions (:func:`attnseg.data.dicom_seg.read_seg`),
never by file order, so the picture shows the placement the SEG file really encodes. One row per slice
(the slices with most segmented voxels by default), two panels: the image, and each segment filled and
outlined in its colour, named by its segment label in the legend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from attnseg.data.dicom_seg import read_seg
from attnseg.data.io import read_image
from attnseg.visualize.drawing import (
    class_legend,
    draw_contours,
    draw_edges,
    draw_image,
    draw_labels,
    panel_width,
    save_figure,
    window,
)
from attnseg.visualize.orientation import slice_view
from attnseg.visualize.slices import DEFAULT_COUNT, most_foreground

PANEL_INCHES = 3.0


def seg_overlay_figure(seg: str | Path, series: str | Path, *, count: int = DEFAULT_COUNT, title: str = "") -> Figure:
    """Draw the SEG file ``seg`` over the DICOM series folder ``series`` it was made from.

    Raises:
        DataError: the series cannot be read as a volume, or the SEG's frames do not lie on its grid.
    """
    image = read_image(series)
    mask = read_seg(seg, grid=(image.spatial_shape, image.geometry))
    labels = {"background": 0, **mask.meta["segments"]}  # segment label -> segment number (its value here)
    volume, values = np.asarray(image.array[0]), np.asarray(mask.array[0])
    view = slice_view(image.geometry)
    chosen = [None] if view.axis is None else list(most_foreground(values > 0, view.axis, count))
    width = panel_width(view.cut(volume, chosen[0]).shape, view.aspect, PANEL_INCHES)
    figure = Figure(figsize=(2 * width, len(chosen) * PANEL_INCHES * 1.1 + 0.6), layout="constrained")
    axes = figure.subplots(len(chosen), 2, squeeze=False)
    value_range = window(volume)
    for row, index in enumerate(chosen):
        picture, plane = view.cut(volume, index), view.cut(values, index)
        for axis in axes[row]:
            draw_image(axis, picture, view, value_range)
        draw_edges(axes[row, 0], view)
        draw_labels(axes[row, 1], plane, labels, view.aspect)
        draw_contours(axes[row, 1], plane, labels, linewidth=1.0)
        where = "" if index is None else f"{view.view} slice {index}"
        axes[row, 0].set_title(f"{where}: series", fontsize=9)
        axes[row, 1].set_title("SEG, placed by its frames' positions", fontsize=9)
    handles = class_legend(labels)
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False, fontsize=9)
    figure.suptitle(title or Path(seg).name, fontsize=10)
    return figure


def save_seg_overlay(
    seg: str | Path, series: str | Path, output: str | Path, *, count: int = DEFAULT_COUNT, overwrite: bool = False
) -> Path:
    """Write :func:`seg_overlay_figure` as a PNG (atomically; an existing file only with ``overwrite``)."""
    return save_figure(seg_overlay_figure(seg, series, count=count), output, overwrite=overwrite)
