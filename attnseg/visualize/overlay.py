"""Overlays: masks and attention maps drawn over the image slice they belong to.

All functions take 2D arrays in the scan's voxel order (X, Y) and draw them with X downwards, as
`matplotlib.imshow` does for a transposed-free array; pass the same slice for image and masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from attnseg.fileio import atomic_path

PALETTE = matplotlib.colormaps["tab10"].colors


def _window(image: np.ndarray) -> tuple[float, float]:
    """Display range from the 1st-99th percentiles, robust to outliers."""
    low, high = np.percentile(image, [1, 99])
    return float(low), float(high if high > low else low + 1)


def _label_colormap(labels: Mapping[str, int]) -> tuple[ListedColormap, int]:
    top = max(labels.values(), default=0)
    colors = [(0, 0, 0, 0)] + [(*PALETTE[(v - 1) % len(PALETTE)], 0.45) for v in range(1, top + 1)]
    return ListedColormap(colors), top


def _save(figure: Figure, path: str | Path, overwrite: bool) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, dpi=100, format="png", bbox_inches="tight")


def save_comparison(
    image: np.ndarray,
    reference: np.ndarray,
    prediction: np.ndarray,
    labels: Mapping[str, int],
    path: str | Path,
    title: str = "",
    overwrite: bool = False,
) -> None:
    """Three panels: the image, the reference mask over it, the predicted mask over it."""
    cmap, top = _label_colormap(labels)
    vmin, vmax = _window(image)
    figure = Figure(figsize=(12, 4.4), layout="constrained")
    axes = figure.subplots(1, 3)
    for axis, mask, name in (
        (axes[0], None, "image"),
        (axes[1], reference, "reference"),
        (axes[2], prediction, "prediction"),
    ):
        axis.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        if mask is not None:
            axis.imshow(mask, cmap=cmap, vmin=0, vmax=max(top, 1), interpolation="nearest")
        axis.set_title(name)
        axis.axis("off")
    handles = [Patch(color=PALETTE[(v - 1) % len(PALETTE)], label=n) for n, v in labels.items() if v > 0]
    figure.legend(handles=handles, loc="lower center", ncol=max(len(handles), 1), frameon=False)
    if title:
        figure.suptitle(title)
    _save(figure, path, overwrite)


def save_attention_maps(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    path: str | Path,
    title: str = "",
    overwrite: bool = False,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    """The image, then each attention map (already resized to the image) as a heat map over it.

    ``value_range`` fixes the colour scale (gate coefficients lie in [0, 1], so one scale compares the
    levels); ``None`` scales each map to [0, its maximum] (unbounded maps such as position attention).
    """
    vmin, vmax = _window(image)
    columns = 1 + len(maps)
    figure = Figure(figsize=(3.6 * columns, 4), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)
    axes[0, 0].imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
    axes[0, 0].set_title("image")
    for axis, (name, values) in zip(axes[0, 1:], maps.items(), strict=True):
        axis.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
        low, high = value_range or (0.0, max(float(values.max()), 1e-6))
        shown = axis.imshow(values, cmap="jet", alpha=0.5, vmin=low, vmax=high)
        axis.set_title(name)
        figure.colorbar(shown, ax=axis, fraction=0.046)
    for axis in axes[0]:
        axis.axis("off")
    if title:
        figure.suptitle(title)
    _save(figure, path, overwrite)
