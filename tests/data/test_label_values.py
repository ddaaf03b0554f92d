"""Values that are not classes, by hand: the comparison path (few values between a mask's extremes) and the
count-everything path (many, or not integers) give the same counts."""

import numpy as np
import pytest

from attnseg.data.label_values import describe_stray, stray_values, value_counts


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.float32])
def test_stray_values_by_hand(dtype):
    mask = np.zeros((4, 5, 6), dtype)
    mask[0, :2, :2] = 2  # 4 voxels of a class
    mask[1, 0, :3] = 7  # 3 stray
    mask[2, 0, 0] = 200  # 1 stray, far: 194 candidates, so every value is counted
    assert stray_values(mask, [2, 5]) == {7: 3, 200: 1}
    assert stray_values(mask[:2], [2, 5]) == {7: 3}  # 0, 2 and 7 only: 1, 3, 4 and 6 are compared, and 7
    assert stray_values(mask[:2], [2, 7]) == {}


def test_background_is_always_a_class_and_non_integers_are_never():
    assert stray_values(np.array([0, 1, 1], bool), [1]) == {}
    assert stray_values(np.array([0.0, 2.0, 0.5, 2.5]), [2]) == {0.5: 1, 2.5: 1}
    counts = value_counts(np.array([0.0, 2.0, 2.0, 0.5]))
    assert counts == {0: 1, 0.5: 1, 2: 2} and [type(value) for value in counts] == [int, float, int]


def test_describe_stray():
    assert describe_stray({7: 1}) == "value 7 (1 voxel) is"
    assert describe_stray({9: 2, 3: 1}) == "values 3 (1 voxel), 9 (2 voxels) are"
    many = describe_stray({value: 1000 for value in range(20, 32)})
    assert many.startswith("values 20 (1,000 voxels), 21") and many.endswith("29 (1,000 voxels) and 2 more values are")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, bool])
def test_value_counts_over_several_chunks_are_numpys(dtype):
    values = np.random.default_rng(0).integers(0, 2 if dtype is bool else 9, 3_000_001).astype(dtype)
    expected = dict(zip(*(array.tolist() for array in np.unique(values, return_counts=True)), strict=True))
    assert value_counts(values) == {int(value): count for value, count in expected.items()}
