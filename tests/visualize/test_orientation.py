"""Slices are shown in radiological convention whatever the voxel order, with the spacing's aspect."""

import numpy as np
import pytest

from attnseg.data.geometry import Geometry
from attnseg.errors import ConfigError
from attnseg.visualize.orientation import axial_axis, slice_view
from tests.fixtures import rotation

RAS = np.diag([-1.0, -1.0, 1.0])  # voxel axes pointing Right, Anterior, Superior (the MNI template's)
# voxel axes (z, x, y) order: the first voxel axis runs Superior, the second Left, the third Posterior
PERMUTED = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def _world(geometry: Geometry, shape: tuple[int, ...]) -> np.ndarray:
    """(3, *shape): the LPS world position of every voxel."""
    index = np.indices(shape).reshape(3, -1).T
    return geometry.index_to_world(index).T.reshape(3, *shape)


@pytest.mark.parametrize(
    ("direction", "axis", "view", "down", "across"),
    [
        (np.eye(3), None, "axial", (1, +1), (0, +1)),  # LPS: rows go posterior, columns go to the left
        (RAS, None, "axial", (1, +1), (0, +1)),
        (PERMUTED, None, "axial", (1, +1), (0, +1)),
        (rotation([0.2, -0.1, 0.15]), None, "axial", (1, +1), (0, +1)),
        (RAS, 1, "coronal", (2, -1), (0, +1)),  # rows go inferior, columns to the left
        (RAS, 0, "sagittal", (2, -1), (1, +1)),  # rows go inferior, columns posterior
    ],
)
def test_views_follow_radiological_convention(direction, axis, view, down, across):
    geometry = Geometry.create([0.8, 1.1, 2.5], [10.0, -20.0, 5.0], direction)
    shape = (7, 6, 5)
    shown = slice_view(geometry, axis)
    assert shown.view == view
    world = _world(geometry, shape)
    index = shape[shown.axis] // 2
    planes = [shown.cut(world[w], index) for w in range(3)]
    (down_axis, down_sign), (across_axis, across_sign) = down, across
    assert np.all(down_sign * np.diff(planes[down_axis], axis=0) > 0)  # moving down the screen
    assert np.all(across_sign * np.diff(planes[across_axis], axis=1) > 0)  # moving right on the screen
    spacing = np.asarray(geometry.spacing)
    row_step = np.linalg.norm([np.diff(p, axis=0)[0, 0] for p in planes])
    column_step = np.linalg.norm([np.diff(p, axis=1)[0, 0] for p in planes])
    assert shown.aspect == pytest.approx(row_step / column_step)  # pixels shaped like the voxels
    assert all(np.isclose(spacing, step).any() for step in (row_step, column_step))


def test_ras_template_axial_slice_is_transposed_and_flipped_both_ways():
    geometry = Geometry.create([1.0, 1.0, 1.0], direction=RAS)
    volume = np.arange(4 * 3 * 2).reshape(4, 3, 2)
    shown = slice_view(geometry)
    assert shown.axis == 2
    np.testing.assert_array_equal(shown.cut(volume, 1), volume[:, :, 1].T[::-1, ::-1])
    assert shown.edges == ("A", "P", "R", "L")


def test_axial_axis_and_errors():
    assert axial_axis(Geometry.create([1, 1, 1], direction=PERMUTED)) == 0
    assert axial_axis(Geometry.identity(2)) is None
    with pytest.raises(ConfigError, match="slice axis must be 0, 1 or 2"):
        slice_view(Geometry.identity(3), 3)


def test_a_2d_image_is_shown_as_stored_with_rows_down():
    geometry = Geometry.create([0.5, 2.0])
    image = np.arange(12).reshape(4, 3)  # (X, Y): X runs across, Y down
    shown = slice_view(geometry)
    assert shown.axis is None
    np.testing.assert_array_equal(shown.cut(image, None), image.T)
    assert shown.aspect == pytest.approx(4.0)  # rows are 2.0 mm, columns 0.5 mm
