"""attnseg.metrics.sides: the boundary offset side by side, pieces missed whole, intensities of the misses."""

import numpy as np
import pytest

from attnseg.metrics.sides import SIDES, missed_by_quarter, missed_pieces, side_offsets
from tests.fixtures import sphere_label

SHAPE, CENTRE, SPACING = (48, 48, 24), (24, 24, 12), (1.0, 1.0, 2.0)


def ball(radius_mm: float, up_voxels: int = 0) -> np.ndarray:
    """A ball in mm on an anisotropic RAS grid, moved ``up_voxels`` towards superior (+axis 2)."""
    centre = (CENTRE[0], CENTRE[1], CENTRE[2] + up_voxels)
    return sphere_label(SHAPE, centre, radius_mm, spacing=SPACING) > 0


def test_a_mask_moved_up_reaches_beyond_at_the_top_and_falls_short_at_the_bottom():
    moved = {s.side: s for s in side_offsets(ball(14.0, up_voxels=2), ball(14.0), SPACING)}
    assert tuple(moved) == SIDES
    # a surface voxel whose normal is at angle t to the 4 mm move is 4 cos(t) mm from the moved surface; the
    # top's normals lie within 55 degrees of superior, so its mean is between 4 cos(55 degrees) = 2.3 and 4 mm
    assert 2.3 <= moved["superior"].mean_mm <= 4.0
    assert -4.0 <= moved["inferior"].mean_mm <= -2.3
    for side in ("left", "right", "posterior", "anterior"):
        assert abs(moved[side].mean_mm) < 1.0
    assert moved["inferior"].unreached > 0.2 and moved["superior"].unreached == 0.0


def test_a_grown_mask_reaches_beyond_by_the_margin_on_every_side():
    for side in side_offsets(ball(17.0), ball(14.0), SPACING):
        assert side.mean_mm == pytest.approx(3.0, abs=0.75), side
        assert side.unreached == 0.0
    for side in side_offsets(ball(14.0), ball(14.0), SPACING):
        assert side.mean_mm == 0.0 and side.median_mm == 0.0 and side.unreached == 0.0


def test_pieces_missed_whole_on_axial_slices():
    spacing = (1.0, 2.0, 3.0)
    ref = np.zeros((30, 20, 6), bool)
    ref[2:12, 2:12, 1:5] = True  # 10 x 10 voxels = 200 mm² on each of 4 slices
    ref[20:25, 5:10, 2:4] = True  # 5 x 5 voxels = 50 mm² on 2 slices: cut apart from the rest on those slices
    ref[28, 0, 1:5] = True  # 2 mm²: too small to count
    pred = ref.copy()
    pred[20:25, 5:10, 3] = False  # missed whole on the upper of its two slices
    pred[20, 5, 2] = True
    pieces, missed = missed_pieces(pred, ref, spacing)
    assert pieces == 6
    assert [(p.height_mm, p.area_mm2, p.covered) for p in missed] == [(6.0, 50.0, 0.0)]  # 2 slices x 3 mm up
    pieces, missed = missed_pieces(np.zeros_like(ref), ref, spacing)  # an empty mask misses every piece
    assert pieces == 6 and len(missed) == 6


def test_which_intensities_the_missed_voxels_have():
    image = np.arange(64, dtype=float).reshape(4, 4, 4)
    ref = np.ones((4, 4, 4), bool)
    assert missed_by_quarter(image >= 16, ref, image) == [1.0, 0.0, 0.0, 0.0]  # the darkest 16 of 64 missed
    assert missed_by_quarter((image < 48) | (image >= 56), ref, image) == [0.0, 0.0, 0.0, 1.0]
    assert missed_by_quarter(ref, ref, image) == [0.0, 0.0, 0.0, 0.0]


def test_what_has_no_sides_is_refused():
    with pytest.raises(ValueError, match="3-D"):
        side_offsets(np.ones((4, 4), bool), np.ones((4, 4), bool), (1.0, 1.0))
    with pytest.raises(ValueError, match="empty"):
        side_offsets(np.zeros((4, 4, 4), bool), np.ones((4, 4, 4), bool), SPACING)
    with pytest.raises(ValueError, match="empty"):
        missed_pieces(np.ones((4, 4, 4), bool), np.zeros((4, 4, 4), bool), SPACING)


def test_the_sides_do_not_depend_on_the_empty_grid_around_the_masks():
    """Only the masks' box (with room for the smoothing) is measured: the same masks in a grid four times as
    large, off centre, give the same figures, and so do masks that touch the grid's edge."""
    small = side_offsets(ball(14.0, up_voxels=2), ball(14.0), SPACING)
    pad = ((10, 30), (0, 40), (5, 0))
    large = side_offsets(np.pad(ball(14.0, up_voxels=2), pad), np.pad(ball(14.0), pad), SPACING)
    assert small == large
    cut = (slice(10, None), slice(None), slice(None))  # the balls cut by the grid's left edge
    at_edge = side_offsets(ball(14.0, up_voxels=2)[cut], ball(14.0)[cut], SPACING)
    padded = side_offsets(np.pad(ball(14.0, up_voxels=2)[cut], pad), np.pad(ball(14.0)[cut], pad), SPACING)
    assert at_edge == padded  # outside the grid counts as background, for the edges as for the normals


def test_the_normals_are_turned_into_the_patients_axes():
    """Voxel axis 2 running towards the patient's right (axis 0 towards inferior): a mask moved 4 mm along
    voxel axis 2 reaches beyond the reference on the right, not at the top."""
    axes = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # columns: I, A, R
    moved = {s.side: s.mean_mm for s in side_offsets(ball(14.0, up_voxels=2), ball(14.0), SPACING, axes)}
    assert 2.3 <= moved["right"] <= 4.0 and -4.0 <= moved["left"] <= -2.3
    assert abs(moved["superior"]) < 1.0 and abs(moved["inferior"]) < 1.0
