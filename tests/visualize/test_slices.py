import numpy as np
import pytest

from attnseg.errors import ConfigError
from attnseg.visualize.slices import check_slices, most_disagreement, most_foreground, slice_scores, top_slices


def test_top_slices_picks_the_best_apart_and_sorts_them():
    scores = [0, 5, 9, 8, 0, 0, 1, 7, 0, 0, 0, 0]
    # gap 12 // 6 = 2: 2 (9) first; 3 (8) is too close; 7 (7) next; 1 (5) is too close to 2; 6 (1) too close to 7
    assert top_slices(scores, 3) == [2, 7]
    assert top_slices(scores, 3, gap=1) == [2, 3, 7]
    assert top_slices(scores, 1) == [2]
    assert top_slices([0, 0, 0, 0, 0], 3) == [2]  # nothing anywhere: the middle slice
    with pytest.raises(ValueError, match="count"):
        top_slices(scores, 0)


def test_scores_and_choices_along_an_axis():
    mask = np.zeros((4, 5, 6), dtype=np.uint8)
    mask[:, :, 1] = 1  # 20 voxels
    mask[0, :, 4] = 2  # 5 voxels
    np.testing.assert_array_equal(slice_scores(mask != 0, 2), [0, 20, 0, 0, 5, 0])
    assert most_foreground(mask, 2, count=2) == [1, 4]
    prediction = mask.copy()
    prediction[:, :2, 4] = 1  # 8 voxels differ in slice 4
    prediction[0, 0, 1] = 0  # 1 in slice 1
    assert most_disagreement(prediction, mask, 2, count=1) == [4]
    assert most_disagreement(mask, mask, 2, count=1) == [1]  # no disagreement: most reference foreground


def test_check_slices():
    assert check_slices([0, -1, 3], 4, 2) == [0, 3, 3]
    with pytest.raises(ConfigError, match=r"slice 4 is outside 0\.\.3 along voxel axis 2"):
        check_slices([4], 4, 2)
