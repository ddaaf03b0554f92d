"""Attention panels: heat maps over the slices they belong to, with the prediction beside them.

Two layouts, one per network family:

* gates (Attention U-Net): one row per slice; the image with the predicted outlines, then one panel
  per gated level and head; one colour bar for all (α lies in [0, 1] for every gate, so one scale
  compares the levels);
* guided (multi-scale guided network): one figure per slice; one row per scale, with for every
  refinement step the position, channel and combined maps, then the scale's own prediction; a last
  row with the image and the average of the scales' predictions (the network's output). Each map is
  shown relative to its own 99.5th percentile over the scan (1 = strong for that map), one colour bar.

Planes come cut and turned already (:class:`~attnseg.visualize.orientation.SliceView`), maps in [0, 1].
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from attnseg.visualize.drawing import (
    PANEL_INCHES,
    class_legend,
    draw_contours,
    draw_edges,
    draw_heat,
    draw_image,
    draw_labels,
    panel_width,
    window,
)
from attnseg.visualize.orientation import SliceView

GATE_COLOUR_LABEL = "gate coefficient α"
GUIDED_COLOUR_LABEL = "activation (RMS over features) / its 99.5th percentile over the scan"
_GUIDED_NAME = re.compile(r"step(\d+) scale(\d+) (\w+)")


def gate_figure(
    images: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    maps: Mapping[str, Sequence[np.ndarray]],
    view: SliceView,
    indices: Sequence[int | None],
    labels: Mapping[str, int],
    *,
    title: str = "",
) -> Figure:
    """One row per slice: the image with the predicted outlines, then every gate and head.

    ``images`` and ``predictions`` hold one plane per slice, ``maps`` one list of planes per map."""
    width = panel_width(images[0].shape, view.aspect)
    columns = 1 + len(maps)
    figure = Figure(figsize=(columns * width + 1.0, len(images) * PANEL_INCHES * 1.12 + 0.6), layout="constrained")
    axes = figure.subplots(len(images), columns, squeeze=False)
    value_range = window(np.concatenate([p.ravel() for p in images]))
    heat = None
    for row, (image, prediction, index) in enumerate(zip(images, predictions, indices, strict=True)):
        draw_image(axes[row, 0], image, view, value_range)
        draw_contours(axes[row, 0], prediction, labels)
        draw_edges(axes[row, 0], view)
        axes[row, 0].set_title("image, prediction" if index is None else f"{view.view} slice {index}", fontsize=9)
        for axis, (name, planes) in zip(axes[row, 1:], maps.items(), strict=True):
            draw_image(axis, image, view, value_range)
            heat = draw_heat(axis, planes[row], view.aspect, (0.0, 1.0))
            axis.set_title(name, fontsize=9)
    if heat is not None:
        figure.colorbar(heat, ax=axes, location="right", shrink=0.8, label=GATE_COLOUR_LABEL)
    figure.legend(handles=class_legend(labels), loc="outside lower center", ncol=6, frameon=False, fontsize=9)
    if title:
        figure.suptitle(title)
    return figure


def guided_figure(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    view: SliceView,
    index: int | None,
    labels: Mapping[str, int],
    *,
    title: str = "",
) -> Figure:
    """One slice of the multi-scale guided network: rows are scales, then the average prediction.

    ``maps`` are named ``step{t} scale{s} {position|channel|combined}``; ``predictions`` ``scale{s}
    prediction`` for each scale and ``prediction`` for their average.
    """
    grid: dict[int, dict[tuple[int, str], np.ndarray]] = {}
    for name, plane in maps.items():
        match = _GUIDED_NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"unexpected map name {name!r} for the guided network")
        step, scale, kind = int(match[1]), int(match[2]), match[3]
        grid.setdefault(scale, {})[(step, kind)] = plane
    scales = sorted(grid)
    cells = sorted({cell for row in grid.values() for cell in row})  # (step, kind), step-major
    cells.sort(key=lambda cell: (cell[0], ("position", "channel", "combined").index(cell[1])))
    columns = len(cells) + 1
    width = panel_width(image.shape, view.aspect)
    figure = Figure(figsize=(columns * width + 1.0, (len(scales) + 1) * PANEL_INCHES * 1.1 + 0.6), layout="constrained")
    axes = figure.subplots(len(scales) + 1, columns, squeeze=False)
    value_range = window(image)
    heat = None
    for row, scale in enumerate(scales):
        for column, cell in enumerate(cells):
            axis = axes[row, column]
            draw_image(axis, image, view, value_range)
            if cell in grid[scale]:
                heat = draw_heat(axis, grid[scale][cell], view.aspect, (0.0, 1.0))
            axis.set_title(f"scale {scale}, step {cell[0]}: {cell[1]}", fontsize=9)
        _prediction_panel(axes[row, -1], image, predictions.get(f"scale{scale} prediction"), view, value_range, labels)
        axes[row, -1].set_title(f"scale {scale} prediction", fontsize=9)
    last = axes[-1]
    draw_image(last[0], image, view, value_range)
    draw_edges(last[0], view)
    last[0].set_title("image" if index is None else f"{view.view} slice {index}", fontsize=9)
    _prediction_panel(last[-1], image, predictions.get("prediction"), view, value_range, labels)
    last[-1].set_title("average of the scales (output)", fontsize=9)
    for axis in last[1:-1]:
        axis.set_visible(False)
    if heat is not None:
        figure.colorbar(heat, ax=axes[:-1, :-1], location="bottom", shrink=0.6, label=GUIDED_COLOUR_LABEL)
    figure.legend(handles=class_legend(labels), loc="outside lower center", ncol=6, frameon=False, fontsize=9)
    if title:
        figure.suptitle(title)
    return figure


def _prediction_panel(axis, image, prediction, view, value_range, labels) -> None:
    draw_image(axis, image, view, value_range)
    if prediction is not None:
        draw_labels(axis, prediction, labels, view.aspect)
        draw_contours(axis, prediction, labels)
