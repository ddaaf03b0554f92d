"""A class is one piece up to a labelling tool's specks (issue 19: FSL BET's Colin27 mask has 98 of them)."""

import numpy as np

from attnseg.inference.postprocess import single_component_classes


def test_specks_do_not_make_a_brain_two_organs():
    label = np.zeros((40, 40), int)
    label[5:35, 5:35] = 1  # 900 voxels
    label[0, 0] = label[0, 39] = label[39, 0] = 1  # 3 specks: 0.3%
    label[2:4, 36:38] = 2
    label[36:38, 36:38] = 2  # two equal pieces
    assert single_component_classes([label], num_classes=3) == [1]
    label[0:3, 0:3] = 1  # a piece of 9 + 900: 1% of the class, no longer a speck
    label[0:3, 37:40] = 1
    assert single_component_classes([label], num_classes=3) == []
