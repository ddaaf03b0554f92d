"""Reorientation to RAS and back: exact, for all 48 axis orders and flips, straight and oblique grids."""

import itertools

import nibabel as nib
import numpy as np
import pytest

from attnseg.data.geometry import Geometry
from attnseg.data.orientation import CANONICAL, Reorientation, check_orientation_code, reorientation
from attnseg.errors import ConfigError
from tests.fixtures import rotation

ORDERS = [
    (axes, flips) for axes in itertools.permutations(range(3)) for flips in itertools.product([False, True], repeat=3)
]


def stored_as(volume: np.ndarray, geometry: Geometry, axes, flips) -> tuple[np.ndarray, Geometry]:
    """The same voxels in the same places, stored in another axis order: an independent construction
    (through the affine), not Reorientation itself."""
    array = np.transpose(volume, axes)
    affine = geometry.affine.copy()
    linear = affine[:3, :3][:, list(axes)]
    origin = affine[:3, 3].copy()
    for k, flip in enumerate(flips):
        if flip:
            array = np.flip(array, k)
            origin = origin + linear[:, k] * (array.shape[k] - 1)
            linear[:, k] = -linear[:, k]
    stored = np.eye(4)
    stored[:3, :3], stored[:3, 3] = linear, origin
    return np.ascontiguousarray(array), Geometry.from_affine(stored)


@pytest.mark.parametrize("oblique", [False, True])
def test_every_storage_order_gives_the_same_canonical_volume(oblique):
    rng = np.random.default_rng(0)
    volume = rng.random((5, 6, 7))
    direction = rotation([0.2, -0.3, 0.25]) if oblique else np.eye(3)
    geometry = Geometry.create([0.8, 1.1, 2.5], [10.5, -3.25, 7.0], direction)
    reference = reorientation(geometry)
    canonical = reference.apply(volume, leading=0)
    canonical_geometry = reference.geometry(geometry, volume.shape)
    for axes, flips in ORDERS:
        array, stored = stored_as(volume, geometry, axes, flips)
        turn = reorientation(stored)
        np.testing.assert_array_equal(turn.apply(array, leading=0), canonical)
        assert turn.geometry(stored, array.shape).allclose(canonical_geometry, atol=1e-9)
        np.testing.assert_array_equal(turn.undo(turn.apply(array[None]))[0], array)  # exact way back


def test_canonical_is_nibabel_ras_and_the_world_does_not_move():
    geometry = Geometry.create([1.0, 2.0, 3.0], [5.0, 6.0, 7.0], rotation([0.1, 0.2, 0.3]))
    array, stored = stored_as(np.zeros((4, 5, 6)), geometry, (2, 0, 1), (True, False, True))
    turn = reorientation(stored)
    canonical = turn.geometry(stored, array.shape)
    assert "".join(nib.aff2axcodes(canonical.ras_affine)) == CANONICAL == canonical.orientation()
    # a voxel keeps its world position: stored index -> canonical index
    index = np.array([2, 3, 1])
    marker = np.zeros(array.shape)
    marker[tuple(index)] = 1
    moved = np.argwhere(turn.apply(marker, leading=0))[0]
    np.testing.assert_allclose(canonical.index_to_world(moved), stored.index_to_world(index), atol=1e-9)


def test_other_targets_and_bad_codes():
    geometry = Geometry.create([1, 1, 1])  # LPS
    assert reorientation(geometry, "LPS") == Reorientation((0, 1, 2), (False, False, False))
    assert reorientation(geometry, "RAS") == Reorientation((0, 1, 2), (True, True, False))
    assert reorientation(geometry, "SAR").axes == (2, 1, 0)
    for bad in ("RAR", "XYZ", "RA"):
        with pytest.raises(ConfigError, match="not a code such as RAS"):
            check_orientation_code(bad)
