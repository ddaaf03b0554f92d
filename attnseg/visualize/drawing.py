"""The drawing primitives every picture shares: the grey image, class contours, heat maps, legends, saving.

Conventions, the same in every figure: the image is windowed to its 1st-99th percentiles; each class
has one colour (matplotlib's ``tab10``, in label order) in every panel and legend; heat maps use
``viridis``, a perceptually uniform and colour-blind-safe colour map, so equal steps in value look like
equal steps in colour (rainbow maps such as ``jet`` invent edges); pixels have the aspect ratio of the
voxel spacing; the anatomical directions are written at the edges of the first panel of a row.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from attnseg.fileio import atomic_path
from attnseg.visualize.orientation import SliceView

HEAT_MAP = "viridis"
HEAT_ALPHA = 0.6
PALETTE = matplotlib.colormaps["tab10"].colors
DPI = 100
PANEL_INCHES = 2.6  # height of one image panel
# Okabe-Ito colours (distinguishable with every common colour-vision deficiency) for the error map
ERROR_COLOURS = {"missed": "#0072B2", "extra": "#D55E00", "wrong class": "#F0E442"}


def class_colour(value: int) -> tuple[float, float, float]:
    """The colour of label value ``value`` (> 0) in every picture."""
    return PALETTE[(int(value) - 1) % len(PALETTE)]


def foreground(labels: Mapping[str, int]) -> dict[str, int]:
    """The classes worth drawing: every label but background (value 0)."""
    return {name: int(value) for name, value in labels.items() if int(value) != 0}


def window(image: np.ndarray) -> tuple[float, float]:
    """Display range from the 1st-99th percentiles, robust to outliers."""
    low, high = np.percentile(image, [1, 99]) if np.size(image) else (0.0, 1.0)
    return float(low), float(high if high > low else low + 1)


def panel_width(plane_shape: tuple[int, int], aspect: float, height: float = PANEL_INCHES) -> float:
    """Width in inches of a panel ``height`` inches high that shows a plane without distortion."""
    rows, columns = plane_shape
    ratio = columns / max(rows * aspect, 1e-6)
    return float(np.clip(height * ratio, 0.6 * height, 2.5 * height))


def draw_image(axis: Axes, plane: np.ndarray, view: SliceView, value_range: tuple[float, float]) -> None:
    """The grey image, pixels shaped by the voxel spacing, no ticks."""
    axis.imshow(
        plane, cmap="gray", vmin=value_range[0], vmax=value_range[1], aspect=view.aspect, interpolation="nearest"
    )
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(False)


def draw_edges(axis: Axes, view: SliceView) -> None:
    """Anatomical letters (A, P, R, L, S, I) at the panel's edges."""
    top, bottom, left, right = view.edges
    style = {"color": "white", "fontsize": 8, "fontweight": "bold", "transform": axis.transAxes}
    for text, x, y, ha, va in (
        (top, 0.5, 0.98, "center", "top"),
        (bottom, 0.5, 0.02, "center", "bottom"),
        (left, 0.02, 0.5, "left", "center"),
        (right, 0.98, 0.5, "right", "center"),
    ):
        if text:
            axis.text(x, y, text, ha=ha, va=va, **style)


def draw_contours(
    axis: Axes, plane: np.ndarray, labels: Mapping[str, int], linestyle: str | tuple = "-", linewidth: float = 1.3
) -> None:
    """The outline of each class present in ``plane`` (label values), in its colour."""
    limits = axis.get_xlim(), axis.get_ylim()  # contour would rescale the axes to the voxel centres
    for value in foreground(labels).values():
        inside = plane == value
        if inside.any():
            axis.contour(
                inside.astype(np.float32),
                levels=[0.5],
                colors=[class_colour(value)],
                linestyles=[linestyle],
                linewidths=linewidth,
            )
    axis.set_xlim(*limits[0])
    axis.set_ylim(*limits[1])


def draw_labels(axis: Axes, plane: np.ndarray, labels: Mapping[str, int], aspect: float, alpha: float = 0.45) -> None:
    """Each class filled in its colour, translucent over the image."""
    rgba = np.zeros((*plane.shape, 4), dtype=np.float32)
    for value in foreground(labels).values():
        rgba[plane == value] = (*class_colour(value), alpha)
    axis.imshow(rgba, aspect=aspect, interpolation="nearest")


def draw_errors(axis: Axes, prediction: np.ndarray, reference: np.ndarray, aspect: float) -> None:
    """Where the prediction is wrong: missed (reference only), extra (prediction only), wrong class."""
    missed = (reference != 0) & (prediction == 0)
    extra = (reference == 0) & (prediction != 0)
    confused = (reference != 0) & (prediction != 0) & (reference != prediction)
    rgba = np.zeros((*reference.shape, 4), dtype=np.float32)
    for mask, colour in zip((missed, extra, confused), ERROR_COLOURS.values(), strict=True):
        rgba[mask] = (*matplotlib.colors.to_rgb(colour), 0.85)
    axis.imshow(rgba, aspect=aspect, interpolation="nearest")


def draw_heat(axis: Axes, values: np.ndarray, aspect: float, value_range: tuple[float, float]):
    """A heat map over the image; returns the image artist for a colour bar."""
    return axis.imshow(
        values,
        cmap=HEAT_MAP,
        alpha=HEAT_ALPHA,
        vmin=value_range[0],
        vmax=value_range[1],
        aspect=aspect,
        interpolation="bilinear",
    )


def class_legend(labels: Mapping[str, int], styles: Mapping[str, str] | None = None) -> list:
    """Legend entries naming each class in its colour, then one black line per line style
    (``{"reference": "-", "prediction": "--"}``; any matplotlib line style)."""
    handles: list = [Patch(color=class_colour(value), label=name) for name, value in foreground(labels).items()]
    for name, style in (styles or {}).items():
        handles.append(Line2D([], [], color="black", linestyle=style, label=name))
    return handles


def error_legend() -> list:
    return [Patch(color=colour, label=name) for name, colour in ERROR_COLOURS.items()]


def save_figure(figure: Figure, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``figure`` as PNG, atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight")
    return Path(path)


def figure_png(figure: Figure) -> bytes:
    """``figure`` as PNG bytes (for pictures embedded in the HTML report)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=DPI, format="png", bbox_inches="tight")
    return buffer.getvalue()
