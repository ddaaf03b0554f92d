"""Metrics of one class in one case against hand-computed values, and the empty-mask policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnseg.errors import ConfigError, DataError
from attnseg.metrics import METRIC_KEYS, binary_metrics, label_metrics, surface_distances


def ball(shape: tuple[int, ...], radius_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Voxels whose centre lies within ``radius_mm`` of the grid centre."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2


def test_cube_shifted_one_voxel_along_the_coarse_axis() -> None:
    """A 10³ cube A and the same cube moved one voxel along z, spacing (1, 1, 3) mm.

    Overlap: |A∩B| = 10·10·9 = 900 of 1000 voxels each, so Dice = precision = recall = 0.9,
    IoU = 900/1100 = 9/11, VS = 1.

    Surface (boundary voxels) of A: the bottom layer z=0 (100), the top layer z=9 (100) and the side
    ring of the 8 layers between (8·36 = 288): 488 voxels. Distances to B's surface:
    * z=0: B has nothing below z=1, B's bottom face is right above: 3 mm (100 voxels);
    * the side ring at z=1..8 and the ring of the top layer lie on B's sides: 0 mm (288 + 36);
    * the 8x8 inside of the top layer is inside B: the nearest B surface is B's top (3 mm) or B's
      side at the same height, m mm away with m = the in-plane distance to the ring: 28 voxels at
      m=1, 20 at m=2, 16 at m≥3 (3 mm).
    So 324 at 0, 28 at 1, 20 at 2, 116 at 3; B→A is the mirror image, the same multiset.
    HD95 = 3 (the top 116/488 = 24% are 3); ASSD = (28 + 40 + 348)/488 = 416/488;
    NSD@1.5 = (324 + 28)/488; NSD@0.5 = 324/488; NSD@3 = 1.
    """
    a = np.zeros((14, 14, 14), bool)
    a[2:12, 2:12, 2:12] = True
    b = np.roll(a, 1, axis=2)
    spacing = (1.0, 1.0, 3.0)
    m = binary_metrics(a, b, spacing, nsd_tolerance_mm=1.5)
    assert (m.tp, m.fp, m.fn, m.tn) == (900, 100, 100, 14**3 - 1100)
    assert m.dice == pytest.approx(0.9)
    assert m.iou == pytest.approx(9 / 11)
    assert m.precision == pytest.approx(0.9) and m.recall == pytest.approx(0.9)
    assert m.volume_similarity == 1.0
    assert m.volume_pred_mm3 == m.volume_ref_mm3 == 3000.0
    assert m.hd95 == pytest.approx(3.0)
    assert m.assd == pytest.approx(416 / 488)
    assert m.nsd == pytest.approx(352 / 488)
    assert binary_metrics(a, b, spacing, nsd_tolerance_mm=0.5).nsd == pytest.approx(324 / 488)
    assert binary_metrics(a, b, spacing, nsd_tolerance_mm=3.0).nsd == 1.0
    assert m.empty == "none" and not m.flagged


def test_two_disjoint_offset_cubes_with_anisotropic_spacing() -> None:
    """Two 2³ cubes 3 voxels apart along x, spacing (2, 0.5, 1.5) mm: every voxel is a surface voxel.

    A spans x = 0, 1 and B x = 5, 6 (same y, z). A voxel at x=1 is 4 voxels = 8 mm from B's nearest
    voxel (x=5, same y and z); at x=0, 10 mm. Each direction: 4 voxels at 8 mm, 4 at 10 mm.
    HD95 = P95 of [8,8,8,8,10,10,10,10] = 10 (linear interpolation between the 7th and 8th value,
    both 10); ASSD = 9; NSD@8 = 1/2; NSD@7.9 = 0. No overlap: Dice = IoU = precision = recall = 0;
    equal volumes: VS = 1.
    """
    a = np.zeros((9, 4, 4), bool)
    a[0:2, 1:3, 1:3] = True
    b = np.zeros_like(a)
    b[5:7, 1:3, 1:3] = True
    spacing = (2.0, 0.5, 1.5)
    m = binary_metrics(a, b, spacing, nsd_tolerance_mm=8.0)
    assert (m.dice, m.iou, m.precision, m.recall) == (0.0, 0.0, 0.0, 0.0)
    assert m.volume_similarity == 1.0
    assert m.volume_pred_mm3 == pytest.approx(8 * 2.0 * 0.5 * 1.5)
    assert m.hd95 == pytest.approx(10.0)
    assert m.assd == pytest.approx(9.0)
    assert m.nsd == pytest.approx(0.5)
    assert binary_metrics(a, b, spacing, nsd_tolerance_mm=7.9).nsd == 0.0
    assert m.empty == "none"


def test_single_voxels_one_apart_along_a_3mm_axis() -> None:
    a = np.zeros((5, 5, 5), bool)
    b = np.zeros_like(a)
    a[2, 2, 1] = b[2, 2, 2] = True
    m = binary_metrics(a, b, (1.0, 1.0, 3.0), nsd_tolerance_mm=2.9)
    assert m.hd95 == pytest.approx(3.0) and m.assd == pytest.approx(3.0)
    assert m.nsd == 0.0
    assert binary_metrics(a, b, (1.0, 1.0, 3.0), nsd_tolerance_mm=3.0).nsd == 1.0


def test_identical_masks_are_perfect() -> None:
    a = ball((20, 20, 12), 4.0, (0.5, 0.5, 1.2))
    m = binary_metrics(a, a, (0.5, 0.5, 1.2), nsd_tolerance_mm=0.0)
    assert (m.dice, m.iou, m.precision, m.recall, m.volume_similarity, m.nsd) == (1, 1, 1, 1, 1, 1)
    assert (m.hd95, m.assd) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("shape", "spacing", "shift"),
    [((24, 24, 16), (1.0, 1.0, 3.0), (0, 0, 1)), ((40, 40), (0.5, 2.0), (0, 1))],
)
def test_ball_shifted_by_one_voxel(shape: tuple[int, ...], spacing: tuple[float, ...], shift: tuple[int, ...]) -> None:
    """A ball (disc) B = A moved one voxel along the coarse axis, spacing s along it.

    Every surface voxel a of A has a + shift on B's surface, so no distance exceeds s (HD95 ≤ s,
    NSD@s = 1), and the pole of A has no voxel of B at its height or below, so the largest distance is
    exactly s. Each line of A along the shift axis is one run, so |A∩B| = |A| - (number of lines):
    Dice = 1 - lines/|A|. Equal volumes: VS = 1.
    """
    axis = shift.index(1)
    step = spacing[axis]
    a = ball(shape, 7.0 if len(shape) == 3 else 6.0, spacing)
    b = np.roll(a, 1, axis=axis)
    m = binary_metrics(a, b, spacing, nsd_tolerance_mm=step)
    lines = np.count_nonzero(a.any(axis=axis))
    assert m.dice == pytest.approx(1 - lines / a.sum())
    assert m.volume_similarity == 1.0
    assert 0 < m.hd95 <= step + 1e-6
    assert m.nsd == 1.0
    assert surface_distances(a, b, spacing).both.max() == pytest.approx(step)


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((40, 40, 40), (0.5, 0.5, 0.5)), ((40, 40, 20), (0.5, 0.5, 1.0)), ((60, 30), (0.4, 0.8))],
)
def test_concentric_balls_of_known_radius(shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    """Concentric balls (discs) of radius r and R mm: Dice = 2V(r)/(V(r)+V(R)), surfaces R-r apart.

    The voxel grid approximates them: volumes within 3%, distances within one voxel.
    """
    r, big = (6.0, 8.0) if len(shape) == 3 else (5.0, 7.0)
    a, b = ball(shape, r, spacing), ball(shape, big, spacing)
    m = binary_metrics(a, b, spacing, nsd_tolerance_mm=1.0)
    power = len(shape)
    unit = 4 / 3 * math.pi if power == 3 else math.pi
    assert m.volume_pred_mm3 == pytest.approx(unit * r**power, rel=0.03)
    assert m.volume_ref_mm3 == pytest.approx(unit * big**power, rel=0.03)
    assert m.dice == pytest.approx(2 * r**power / (r**power + big**power), abs=0.02)
    assert m.volume_similarity == pytest.approx(1 - (big**power - r**power) / (big**power + r**power), abs=0.02)
    assert m.precision == 1.0 and m.recall < 1.0
    voxel = max(spacing)
    assert abs(m.assd - (big - r)) < voxel / 2
    assert big - r - voxel <= m.hd95 <= big - r + voxel
    assert m.nsd < 0.2  # the surfaces are 2 mm apart, the tolerance 1 mm
    assert abs(m.boundary_offset + (big - r)) < voxel / 2  # the prediction lies (R - r) mm inside


def test_boundary_offset_of_a_square_grown_by_one_voxel() -> None:
    """A 4x4 reference square and the 6x6 square one voxel bigger all round, spacing 1 mm.

    The prediction's 20 surface voxels lie outside the reference: its 16 side voxels 1 mm from the
    reference's ring, its 4 corners sqrt(2) mm from the reference's corners. The reference's 12 surface
    voxels lie inside the prediction, each 1 mm from its ring. Offset = (16 + 4 sqrt(2) + 12) / 32, the
    same as ASSD; swapping the two gives its negative, and a shift along an axis gives zero.
    """
    ref = np.zeros((8, 8), bool)
    ref[2:6, 2:6] = True
    pred = np.zeros_like(ref)
    pred[1:7, 1:7] = True
    expected = (16 + 4 * math.sqrt(2) + 12) / 32
    assert binary_metrics(pred, ref, (1.0, 1.0)).boundary_offset == pytest.approx(expected)
    assert binary_metrics(pred, ref, (1.0, 1.0)).assd == pytest.approx(expected)
    assert binary_metrics(ref, pred, (1.0, 1.0)).boundary_offset == pytest.approx(-expected)
    assert binary_metrics(np.roll(ref, 1, axis=0), ref, (1.0, 1.0)).boundary_offset == pytest.approx(0.0)
    # at 2 mm along the first axis. The prediction's 8 side voxels across that axis are 2 mm out, the 8 along
    # it 1 mm, the 4 corners sqrt(5) mm. Of the reference's ring, the 4 corners and the 4 side voxels along
    # the coarse axis are 1 mm from the prediction's side, the other 4 are 2 mm from it.
    coarse = binary_metrics(pred, ref, (2.0, 1.0)).boundary_offset
    assert coarse == pytest.approx((8 * 2 + 8 * 1 + 4 * math.sqrt(5) + 8 * 1 + 4 * 2) / 32)


def test_boundary_offset_ignores_where_the_masks_sit_in_the_array() -> None:
    """The masks are cropped to their box before the edges are found: at the array's border as inside it."""
    ref = np.zeros((9, 9, 9), bool)
    ref[0:4, 0:4, 0:4] = True
    pred = np.zeros_like(ref)
    pred[0:5, 0:5, 0:5] = True
    inside = binary_metrics(np.roll(pred, 2, (0, 1, 2)), np.roll(ref, 2, (0, 1, 2)), (1.0, 1.0, 1.0))
    at_border = binary_metrics(pred, ref, (1.0, 1.0, 1.0))
    assert at_border.boundary_offset > 0 and inside.boundary_offset > 0
    assert at_border.hd95 == inside.hd95


# ---------------------------------------------------------------- the empty-mask policy


def test_both_empty_is_a_perfect_score() -> None:
    empty = np.zeros((6, 6, 6), bool)
    m = binary_metrics(empty, empty, (1.0, 1.0, 2.0))
    assert (m.dice, m.iou, m.precision, m.recall, m.volume_similarity, m.nsd) == (1, 1, 1, 1, 1, 1)
    assert (m.hd95, m.assd, m.boundary_offset) == (0.0, 0.0, 0.0)
    assert m.empty == "both" and not m.flagged
    assert (m.tp, m.fp, m.fn, m.tn) == (0, 0, 0, 216)


def test_empty_prediction_is_flagged_with_nan_distances() -> None:
    ref = np.zeros((8, 8), bool)
    ref[2:5, 2:5] = True
    m = binary_metrics(np.zeros_like(ref), ref, (0.7, 0.7))
    assert (m.dice, m.iou, m.recall, m.volume_similarity) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(m.precision)
    assert math.isnan(m.hd95) and math.isnan(m.assd) and math.isnan(m.nsd) and math.isnan(m.boundary_offset)
    assert m.empty == "prediction" and m.flagged
    assert m.n_ref == 9 and m.volume_ref_mm3 == pytest.approx(9 * 0.49)


def test_empty_reference_is_flagged_with_nan_distances() -> None:
    pred = np.zeros((8, 8, 4), bool)
    pred[1, 1, 1] = True
    m = binary_metrics(pred, np.zeros_like(pred), (1.0, 1.0, 1.0))
    assert (m.dice, m.iou, m.precision, m.volume_similarity) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(m.recall)
    assert math.isnan(m.hd95) and math.isnan(m.assd) and math.isnan(m.nsd)
    assert m.empty == "reference" and m.flagged


def test_as_dict_uses_report_names() -> None:
    a = np.zeros((4, 4), bool)
    a[1, 1] = True
    d = binary_metrics(a, a, (1.0, 1.0)).as_dict()
    assert tuple(d) == (*METRIC_KEYS, "empty")
    assert d["Dice"] == 1.0 and d["TP"] == 1 and d["empty"] == "none"


# ---------------------------------------------------------------- label maps


def test_label_metrics_per_class_skips_background() -> None:
    pred = np.zeros((1, 10, 10, 4), np.uint8)  # a channel axis of 1 is accepted
    ref = np.zeros((10, 10, 4), np.int16)
    pred[0, 1:4, 1:4, 1:3] = 1
    ref[1:4, 1:4, 1:3] = 1
    ref[6:8, 6:8, 1:3] = 2  # class 2 missed entirely
    labels = {"background": 0, "liver": 1, "tumour": 2, "vessel": 3}
    out = label_metrics(pred, ref, labels, (0.8, 0.8, 2.5))
    assert list(out) == ["liver", "tumour", "vessel"]
    assert out["liver"].dice == 1.0 and out["liver"].hd95 == 0.0
    assert out["tumour"].empty == "prediction" and out["tumour"].dice == 0.0
    assert out["vessel"].empty == "both" and out["vessel"].dice == 1.0
    with_bg = label_metrics(pred, ref, labels, (0.8, 0.8, 2.5), include_background=True)
    assert list(with_bg) == ["background", "liver", "tumour", "vessel"]
    assert with_bg["background"].fn == 0 and with_bg["background"].fp == 8


def test_label_metrics_accepts_integral_floats_and_rejects_others() -> None:
    ref = np.zeros((6, 6), np.float32)
    ref[1:3, 1:3] = 1.0
    assert label_metrics(ref, ref, {"a": 1}, (1.0, 1.0))["a"].dice == 1.0
    with pytest.raises(DataError, match="non-integer"):
        label_metrics(ref + 0.5, ref, {"a": 1}, (1.0, 1.0))


@pytest.mark.parametrize(
    ("pred_shape", "spacing", "message"),
    [
        ((6, 6, 3), (1.0, 1.0, 1.0), "differs from reference shape"),
        ((6, 6, 4), (1.0, 1.0), "expected a 2D label map"),
        ((6, 6, 4), (1.0, 0.0, 1.0), "positive values"),
        ((6, 6, 4), (1.0, 1.0, 1.0, 1.0), "positive values"),
        ((6, 6, 4), "abc", "sequence of numbers"),
    ],
)
def test_bad_inputs_raise_one_line_data_errors(pred_shape: tuple[int, ...], spacing: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        label_metrics(np.zeros(pred_shape, np.uint8), np.zeros((6, 6, 4), np.uint8), {"a": 1}, spacing)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("labels", "message"),
    [({"a": 1, "b": 1}, "more than one name"), ({"background": 0}, "no class"), ({"a": "1"}, "integer")],
)
def test_bad_labels_raise_config_errors(labels: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        label_metrics(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), labels, (1.0, 1.0))


def test_negative_tolerance_is_rejected() -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        binary_metrics(np.ones((3, 3), bool), np.ones((3, 3), bool), (1.0, 1.0), nsd_tolerance_mm=-1.0)
