"""Array helpers: the class map of scores, slab by slab, in one byte a voxel."""

import numpy as np
import pytest

from attnseg.data import arrays
from attnseg.data.arrays import argmax_classes


@pytest.mark.parametrize("slab_voxels", [1, 7, 1 << 22])  # slabs of one row, ragged slabs, one slab
def test_argmax_classes_is_argmax_in_one_byte(monkeypatch, slab_voxels):
    """The same classes as numpy's argmax(0), ties to the first class included, in uint8, whatever the slabs."""
    monkeypatch.setattr(arrays, "ARGMAX_SLAB_VOXELS", slab_voxels)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, (4, 5, 3, 2)).astype(np.float32)  # many ties
    classes = argmax_classes(scores)
    assert classes.dtype == np.uint8 and classes.shape == (5, 3, 2)
    np.testing.assert_array_equal(classes, scores.argmax(0))
    flipped = np.flip(scores, (1, 2))  # a view with negative strides, as a reoriented result
    np.testing.assert_array_equal(argmax_classes(flipped), flipped.argmax(0))


def test_argmax_classes_beyond_256_classes():
    scores = np.zeros((300, 2, 2), dtype=np.float32)
    scores[299, 0, 0] = scores[5, 1, 1] = 1.0
    classes = argmax_classes(scores)
    assert classes.dtype == np.uint16 and classes.tolist() == [[299, 0], [0, 5]]
