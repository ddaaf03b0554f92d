"""Maps on the model's grid come back on the scan's grid exactly as masks do (the predictor's inverse)."""

import numpy as np
import pytest

from attnseg.data import Image, Plan, preprocess_case, restore_prediction
from attnseg.data.plan import ChannelNormalization
from attnseg.data.preprocess import normalize
from attnseg.visualize.input_grid import labels_on_input_grid, maps_on_input_grid
from tests.fixtures import oblique_geometry

SHAPE = (30, 26, 9)
MARGIN = (slice(3, 27), slice(2, 22), slice(1, 8))  # the non-zero box: everything else is cropped away


def _scan() -> Image:
    """A smooth blob (values change slowly, so linear resampling is nearly exact) inside a zero margin."""
    grid = np.indices(SHAPE).astype(np.float32)
    centre = np.array([14.0, 12.0, 4.0])[:, None, None, None]
    blob = 100 + 50 * np.exp(-(((grid - centre) / np.array([9, 8, 4])[:, None, None, None]) ** 2).sum(0))
    array = np.zeros(SHAPE, np.float32)
    array[MARGIN] = blob[MARGIN]
    return Image(array[None], oblique_geometry())


def _plan(target_spacing) -> Plan:
    return Plan(
        spatial_dims=2,
        image_dims=3,
        target_spacing=target_spacing,
        slice_axis=2,
        patch_size=(32, 32),
        normalization=[ChannelNormalization("zscore", use_nonzero_mask=True)],
        labels={"background": 0, "organ": 1, "lesion": 2},
        channel_names=["MR"],
    )


def _normalised_in_place(image: Image) -> np.ndarray:
    """What the network saw, put by hand where it came from: the cropped, normalised image, zero outside."""
    expected = np.zeros(SHAPE, np.float32)
    expected[MARGIN] = normalize(image.array[(slice(None), *MARGIN)], _plan((None,) * 3).normalization)[0]
    return expected


def test_without_resampling_the_way_back_is_exact():
    image = _scan()
    case = preprocess_case(image, _plan(oblique_geometry().spacing))
    assert case.properties.resampled_shape == (24, 20, 7)  # cropped, not resampled
    (restored,) = maps_on_input_grid(case.image, case.properties)  # the network's input itself as a "map"
    assert restored.shape == SHAPE
    np.testing.assert_allclose(restored, _normalised_in_place(image), atol=1e-6)


def test_with_resampling_maps_land_where_they_came_from():
    image = _scan()
    spacing = oblique_geometry().spacing
    case = preprocess_case(image, _plan((spacing[0] * 1.5, spacing[1] * 1.5, None)))
    assert case.properties.resampled_shape == (16, 13, 7)
    (restored,) = maps_on_input_grid(case.image, case.properties)
    expected = _normalised_in_place(image)
    inner = (slice(5, 25), slice(4, 20), slice(1, 8))  # away from the crop's edge, where interpolation clamps
    error = np.abs(restored[inner] - expected[inner]).mean()
    shifted = np.abs(np.roll(restored, 1, axis=0)[inner] - expected[inner]).mean()
    assert error < 0.05
    assert shifted > 2 * error  # one voxel off would show
    assert np.all(restored[:3] == 0) and np.all(restored[27:] == 0)  # outside the crop


def test_many_maps_travel_in_chunks_of_foreground_channels():
    image = _scan()
    case = preprocess_case(image, _plan((1.0, 1.5, None)))
    rng = np.random.default_rng(0)
    maps = rng.random((5, *case.spatial_shape)).astype(np.float32)  # 5 maps, 2 per call (3 classes)
    together = list(maps_on_input_grid(maps, case.properties))
    assert len(together) == 5
    for single, restored in zip(maps, together, strict=True):
        (alone,) = maps_on_input_grid(single[None], case.properties)
        np.testing.assert_array_equal(restored, alone)


def test_predictions_come_back_as_the_predictor_makes_masks():
    image = _scan()
    case = preprocess_case(image, _plan((1.0, 1.5, None)))
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(3), size=case.spatial_shape).transpose(3, 0, 1, 2).astype(np.float32)
    labels = labels_on_input_grid(probabilities, case.properties)
    np.testing.assert_array_equal(labels, restore_prediction(probabilities, case.properties)[0])
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_a_single_class_model_cannot_carry_maps():
    image = _scan()
    plan = _plan((None,) * 3)
    plan.labels = {"background": 0}
    case = preprocess_case(image, plan)
    with pytest.raises(ValueError, match="single class"):
        list(maps_on_input_grid(case.image, case.properties))
