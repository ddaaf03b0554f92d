"""Overlays: outlines per class with named legend entries, the slices that disagree most, the spacing's aspect."""

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from attnseg.data.geometry import Geometry
from attnseg.errors import OutputExistsError
from attnseg.visualize.drawing import ERROR_COLOURS, class_colour
from attnseg.visualize.overlay import comparison_figure, save_comparison

LABELS = {"background": 0, "grey matter": 1, "white matter": 2}
GEOMETRY = Geometry.create([0.5, 0.8, 3.0])  # LPS axes, thick axial slices


def _masks():
    reference = np.zeros((40, 30, 10), np.uint8)
    reference[10:30, 5:25, :] = 1
    reference[15:25, 10:20, :] = 2
    prediction = reference.copy()
    prediction[10:14, 5:25, 5] = 0  # 80 voxels missed in slice 5
    prediction[30:33, 5:25, 2] = 1  # 60 extra in slice 2
    prediction[15:17, 10:20, 8] = 1  # 20 of the wrong class in slice 8
    image = np.random.default_rng(0).normal(100, 10, reference.shape) + 40 * reference
    return image, reference, prediction


def test_rows_are_the_slices_that_disagree_most_with_their_counts():
    image, reference, prediction = _masks()
    figure = comparison_figure(image, reference, prediction, LABELS, geometry=GEOMETRY, count=3)
    titles = [axis.get_title() for axis in figure.axes]
    assert [t for t in titles if t.endswith(": image")] == [f"axial slice {i}: image" for i in (2, 5, 8)]
    assert [t for t in titles if t.startswith("errors")] == [f"errors: {n} voxels differ" for n in (60, 80, 20)]


def test_legend_names_every_class_and_line_style_and_error():
    image, reference, prediction = _masks()
    figure = comparison_figure(image, reference, prediction, LABELS, geometry=GEOMETRY, slices=[5])
    (legend,) = figure.legends
    names = [text.get_text() for text in legend.get_texts()]
    assert names == ["grey matter", "white matter", "reference", "prediction", *ERROR_COLOURS]


def test_outlines_per_class_solid_for_reference_dashed_for_prediction():
    image, reference, prediction = _masks()
    figure = comparison_figure(image, reference, prediction, LABELS, geometry=GEOMETRY, slices=[5])
    outlines = figure.axes[1].collections
    assert len(outlines) == 4  # two classes, reference and prediction
    colours = [tuple(np.round(c.get_edgecolor()[0][:3], 4)) for c in outlines]
    assert colours == [tuple(np.round(class_colour(v), 4)) for v in (1, 2, 1, 2)]
    solid = [c.get_linestyle()[0][1] is None for c in outlines]
    assert solid == [True, True, False, False]
    # the error panel: the missed voxels of slice 5 in the "missed" colour
    errors = figure.axes[2].images[-1].get_array()
    assert np.count_nonzero(errors[..., 3]) == 80
    np.testing.assert_allclose(errors[errors[..., 3] > 0][0, :3], to_rgb(ERROR_COLOURS["missed"]))


def test_pixels_have_the_spacings_aspect_ratio():
    image, reference, prediction = _masks()
    axial = comparison_figure(image, reference, prediction, LABELS, geometry=GEOMETRY, slices=[0])
    assert axial.axes[0].get_aspect() == pytest.approx(0.8 / 0.5)  # rows run along y, columns along x
    coronal = comparison_figure(image, reference, prediction, LABELS, geometry=GEOMETRY, axis=1, slices=[3])
    assert coronal.axes[0].get_aspect() == pytest.approx(3.0 / 0.5)  # thick slices are not squashed
    assert coronal.axes[0].get_title() == "coronal slice 3: image"


def test_save_writes_a_png_and_keeps_an_existing_one(tmp_path):
    image, reference, prediction = _masks()
    path = tmp_path / "overlay.png"
    save_comparison(image, reference, prediction, LABELS, path, geometry=GEOMETRY, count=1, title="case 1")
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.width > 1.5 * picture.height  # one row of three panels
    with pytest.raises(OutputExistsError, match=r"overlay\.png exists; pass overwrite=True"):
        save_comparison(image, reference, prediction, LABELS, path)
    with pytest.raises(ValueError, match="must share a grid"):
        comparison_figure(image, reference[:, :, :5], prediction, LABELS)


def test_2d_images_have_one_row():
    image, reference, prediction = (a[:, :, 5] for a in _masks())
    figure = comparison_figure(image, reference, prediction, LABELS, geometry=Geometry.create([0.5, 0.8]))
    assert len(figure.axes) == 3
    assert figure.axes[0].get_title() == "image"
