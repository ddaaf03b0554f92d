import json

import numpy as np
import pytest
import torch

from attnseg.data.arrays import argmax_channels, argmax_classes
from attnseg.data.dataset import load_dataset
from attnseg.data.geometry import Geometry
from attnseg.data.io import Image, read_image, write_image
from attnseg.data.orientation import Reorientation
from attnseg.data.plan import ChannelNormalization, Plan, plan_dataset
from attnseg.data.preprocess import (
    CaseProperties,
    load_preprocessed,
    normalize,
    otsu_threshold,
    preprocess_case,
    preprocess_dataset,
    resample,
    restore_channel,
    restore_prediction,
    restore_probabilities,
)
from attnseg.errors import DataError
from tests.fixtures import rotation, synthetic_case


def _case(shape=(20, 18, 12), spacing=(0.8, 0.8, 2.0), classes=3, seed=0):
    image, label = synthetic_case(shape, np.random.default_rng(seed), classes)
    g = Geometry.create(spacing, [-30.0, 12.0, 7.5], rotation([0.1, -0.2, 0.3]))
    return Image(image[None], g), Image(label[None], g)


def _plan(spatial_dims=2, target=(0.8, 0.8, None), scheme="zscore", **extra):
    norm = ChannelNormalization(scheme, mean=120.0, std=20.0, lower=90.0, upper=160.0) if scheme == "ct" else None
    return Plan(
        spatial_dims=spatial_dims,
        image_dims=3,
        target_spacing=target,
        slice_axis=2 if spatial_dims == 2 else None,
        patch_size=(32, 32) if spatial_dims == 2 else (16, 16, 16),
        normalization=[norm or ChannelNormalization(scheme)],
        labels={"background": 0, "organ": 1, "lesion": 2},
        channel_names=["CT" if scheme == "ct" else "MR"],
        **extra,
    )


def _dice(a, b, k):
    a, b = a == k, b == k
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_round_trip_is_exact_without_resampling(tmp_path):
    image, label = _case()
    pre = preprocess_case(image, _plan(), label, case_id="c0")
    assert pre.image.dtype == np.float32 and pre.image.shape == (1, 18, 16, 10)  # cropped to the non-zero box
    assert pre.label.shape == (18, 16, 10) and pre.label.dtype == np.uint8
    assert pre.properties.bbox == ((1, 19), (1, 17), (1, 11))
    # identity "prediction": the preprocessed label as a class map, then as one-hot probabilities
    restored = restore_prediction(pre.label, pre.properties)
    np.testing.assert_array_equal(restored, label.array)
    one_hot = np.eye(3, dtype=np.float32)[pre.label].transpose(3, 0, 1, 2)
    np.testing.assert_array_equal(restore_prediction(one_hot, pre.properties), label.array)
    np.testing.assert_array_equal(restore_prediction(torch.from_numpy(one_hot), pre.properties), label.array)
    # written with the input's geometry, the mask has exactly the input's grid
    mask = read_image(write_image(tmp_path / "mask.nrrd", restored, image.geometry))
    assert mask.spatial_shape == image.spatial_shape and mask.geometry.allclose(image.geometry, atol=1e-6)


def test_round_trip_with_resampling_keeps_the_anatomy():
    image, label = _case(shape=(40, 36, 30))
    pre = preprocess_case(image, _plan(target=(1.6, 1.6, None)), label)
    assert pre.image.shape[1:] == (19, 17, 28)  # 38 x 34 cropped, halved in-plane; slices untouched
    restored = restore_prediction(pre.label, pre.properties)
    assert restored.shape == label.array.shape
    for k, least in ((1, 0.9), (2, 0.85)):  # the lesion has a radius of 5 voxels, 2.5 after resampling
        assert _dice(restored[0], label.array[0], k) > least
        # no shift: the centre of each class stays within a quarter voxel
        before, after = np.argwhere(label.array[0] == k).mean(0), np.argwhere(restored[0] == k).mean(0)
        np.testing.assert_allclose(after, before, atol=0.25)
    # 3D plan: every axis resampled
    pre3 = preprocess_case(image, _plan(3, target=(1.6, 1.6, 1.0)), label)
    assert pre3.image.shape[1:] == (19, 17, 56)
    assert _dice(restore_prediction(pre3.label, pre3.properties)[0], label.array[0], 1) > 0.9


def test_restore_probabilities_fills_background_outside_the_crop():
    image, label = _case()
    pre = preprocess_case(image, _plan(), label)
    one_hot = np.eye(3, dtype=np.float32)[pre.label].transpose(3, 0, 1, 2)
    probs = restore_probabilities(one_hot, pre.properties)
    assert probs.shape == (3, *image.spatial_shape)
    np.testing.assert_array_equal(probs.argmax(0), label.array[0])
    np.testing.assert_array_equal(probs[:, 0, 0, 0], [1.0, 0.0, 0.0])


# the reorientations of the restore tests: none, LPS to RAS (two flips), and a transpose with flips
TURNS = [None, Reorientation((0, 1, 2), (True, True, False)), Reorientation((2, 0, 1), (False, True, True))]
TURN_IDS = ["stored-as-planned", "LPS-to-RAS", "transposed-and-flipped"]


@pytest.mark.parametrize("turn", TURNS, ids=TURN_IDS)
@pytest.mark.parametrize("bbox", [((0, 6), (0, 5), (0, 4)), ((1, 5), (2, 5), (0, 3))], ids=["whole", "cropped"])
def test_restore_probabilities_in_the_stored_order_as_the_reordered_copy(turn, bbox):
    """Written straight into the stored order through a view, the probabilities are, bit for bit, those of
    the way it was done before: a background grid, the crop pasted in, then a reordered copy."""
    shape, resampled = (6, 5, 4), (3, 2, 5)
    properties = CaseProperties(
        Geometry.create([1.0, 1.0, 1.0]), shape, bbox, resampled, (2.0, 2.0, 1.0), (0, 1, 2), turn
    )
    scores = np.random.default_rng(1).random((3, *resampled), dtype=np.float32)
    pasted = np.zeros((3, *shape), dtype=np.float32)
    pasted[0] = 1.0
    pasted[(slice(None), *(slice(a, b) for a, b in bbox))] = resample(scores, properties.cropped_shape)
    expected = turn.undo(pasted) if turn is not None else pasted
    restored = restore_probabilities(scores, properties)
    assert restored.dtype == np.float32 and restored.flags.c_contiguous
    assert restored.shape == (3, *properties.stored_shape) == expected.shape
    np.testing.assert_array_equal(restored, expected)


@pytest.mark.parametrize("turn", TURNS, ids=TURN_IDS)
@pytest.mark.parametrize("bbox", [((0, 7), (0, 5), (0, 9)), ((1, 6), (2, 5), (0, 8))], ids=["whole", "cropped"])
def test_one_channel_at_a_time_is_the_whole_volume_bit_for_bit(turn, bbox):
    """``restore_channel`` is each channel of ``restore_probabilities`` bit for bit (5 classes, an odd
    count; every axis resampled, up and down, with a flipped orientation), and the running argmax over
    the channels is the whole volume's class map, ties and NaNs included."""
    shape, resampled = (7, 5, 9), (3, 4, 5)
    properties = CaseProperties(
        Geometry.create([1.0, 1.0, 1.0]), shape, bbox, resampled, (2.0, 1.0, 1.5), (0, 1, 2, 3, 4), turn
    )
    scores = np.random.default_rng(3).random((5, *resampled), dtype=np.float32)
    scores[2] = scores[1]  # ties: the first class wins
    scores[3, 0, 0, 0] = np.nan  # argmax treats NaN as the largest
    whole = restore_probabilities(scores, properties)
    channels = [restore_channel(torch.from_numpy(scores), properties, k) for k in range(5)]
    for k, channel in enumerate(channels):
        assert channel.dtype == np.float32 and channel.shape == properties.stored_shape
        np.testing.assert_array_equal(channel, whole[k])
        assert channel.tobytes() == np.ascontiguousarray(whole[k]).tobytes()  # -0.0 and NaN payloads too
    classes = argmax_channels(iter(channels), 5)
    assert classes.dtype == np.uint8
    np.testing.assert_array_equal(classes, argmax_classes(whole))
    assert np.isnan(whole).any() and (classes == 3).any() and not (classes == 2).any()


def test_argmax_channels_nan_ties_and_many_classes():
    """The first NaN wins, as numpy's argmax; beyond 256 classes the map is uint16."""
    scores = np.array([[0.5, np.nan, 0.2, 0.1], [np.nan, 0.3, 0.2, np.nan], [0.9, np.nan, 0.2, 0.0]], np.float32)
    classes = argmax_channels((row.copy() for row in scores), 3)
    np.testing.assert_array_equal(classes, scores.argmax(0))
    many = np.zeros((300, 2), dtype=np.float32)
    many[299, 0] = 1.0
    wide = argmax_channels((row.copy() for row in many), 300)
    assert wide.dtype == np.uint16 and wide.tolist() == [299, 0]


@pytest.mark.parametrize(
    "direction",
    [np.eye(3), np.diag([-1.0, -1.0, 1.0]), np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])],
    ids=["LPS", "RAS", "transposed-and-flipped"],  # directions in LPS, as ITK stores them
)
def test_an_int16_scan_is_reoriented_before_its_float32_copy(direction):
    """Reordering the stored int16 and converting in the same copy gives, bit for bit, what converting to
    float32 first gave (a transpose and flips are exact), and leaves the image as it was."""
    rng = np.random.default_rng(2)
    stored = rng.integers(-1024, 1500, (1, 14, 11, 9)).astype(np.int16)
    stored[:, :2] = 0  # a zero border to crop
    g = Geometry.create([0.7, 0.8, 1.25], [5.0, -3.0, 2.0], direction)
    plan = _plan(spatial_dims=3, target=(1.0, 1.0, 1.0), scheme="ct", orientation="RAS")
    scan = Image(stored.copy(), g)
    pre = preprocess_case(scan, plan)
    converted = preprocess_case(Image(stored.astype(np.float32), g), plan)
    np.testing.assert_array_equal(scan.array, stored)
    assert pre.image.dtype == converted.image.dtype == np.float32
    np.testing.assert_array_equal(pre.image, converted.image)
    assert pre.properties.to_dict() == converted.properties.to_dict()


def test_tiny_lesion_survives_resampling():
    """A lesion of a few voxels (well below 0.1% of the volume) is not lost by label resampling."""
    shape = (60, 60, 20)
    image = np.full(shape, 100.0, np.float32)
    label = np.zeros(shape, np.uint8)
    label[30:32, 30:32, 10:12] = 2  # 8 voxels of 72,000
    g = Geometry.create([0.5, 0.5, 2.0])
    pre = preprocess_case(Image(image[None], g), _plan(target=(0.75, 0.75, None)), Image(label[None], g))
    assert (pre.label == 2).sum() > 0
    assert 2 in pre.class_locations and len(pre.class_locations[2]) == (pre.label == 2).sum()


def test_normalisation_formulas():
    x = np.array([[[0.0, 0.0], [50.0, 200.0]]], dtype=np.float32)
    ct = normalize(x, [ChannelNormalization("ct", mean=100.0, std=50.0, lower=20.0, upper=150.0)])
    np.testing.assert_allclose(ct[0], (np.clip(x[0], 20, 150) - 100) / 50)
    z = normalize(x, [ChannelNormalization("zscore")])
    np.testing.assert_allclose(z[0], (x[0] - x[0].mean()) / x[0].std(), rtol=1e-6)
    masked = normalize(x, [ChannelNormalization("zscore", use_nonzero_mask=True)])
    np.testing.assert_allclose(masked[0], [[0, 0], [-1, 1]], atol=1e-6)  # statistics of the non-zero voxels only
    np.testing.assert_allclose(normalize(x, [ChannelNormalization("rescale")])[0], x[0] / 200)


@pytest.mark.parametrize("number", [float, np.float64], ids=["plan.json", "plan in memory"])
def test_ct_normalisation_in_place_is_the_formula_to_the_bit(number):
    """Clipped, shifted and scaled in place, the CT window gives exactly what the expression gave, in the
    precision the statistics imply: float32 for Python floats, float64 (then float32) for numpy's."""
    x = np.random.default_rng(2).normal(40, 300, (1, 30, 20, 10)).astype(np.float32)
    norm = ChannelNormalization(
        "ct", mean=number(112.756975), std=number(29.3092), lower=number(-52.3), upper=number(191.0)
    )
    expected = ((np.clip(x[0], norm.lower, norm.upper) - norm.mean) / float(norm.std)).astype(np.float32)
    np.testing.assert_array_equal(normalize(x, [norm])[0], expected)


def test_otsu_threshold_splits_two_populations():
    values = np.concatenate([np.full(600, 10.0), np.full(400, 90.0)])
    threshold = otsu_threshold(values)
    assert 10.0 <= threshold < 90.0  # any cut between the two levels separates them
    assert otsu_threshold(np.full(5, 3.0)) == 3.0


def test_robust_zscore_ignores_how_much_air_surrounds_the_tissue():
    """The same tissue (mean 100, sd 10) inside a little or a lot of air: nnU-Net's whole-image z-score gives
    the tissue different values; the robust one gives the same, namely the tissue's own z-score."""
    tissue = np.random.default_rng(0).normal(100, 10, (20, 20, 20)).astype(np.float32)
    small, large = np.zeros((24, 24, 24), np.float32), np.zeros((60, 60, 60), np.float32)
    small[2:22, 2:22, 2:22] = tissue
    large[20:40, 20:40, 20:40] = tissue
    expected = (tissue - tissue.mean()) / tissue.std()
    robust = [
        normalize(volume[None], [ChannelNormalization("robust_zscore")])[0][inner]
        for volume, inner in ((small, np.s_[2:22, 2:22, 2:22]), (large, np.s_[20:40, 20:40, 20:40]))
    ]
    np.testing.assert_allclose(robust[0], robust[1], atol=0.02)  # the air does not matter
    unclipped = tissue < np.percentile(tissue, 99)  # the brightest 0.5% are clipped
    np.testing.assert_allclose(robust[0][unclipped], expected[unclipped], atol=0.05)
    whole_small = normalize(small[None], [ChannelNormalization("zscore")])[0][2:22, 2:22, 2:22]
    whole_large = normalize(large[None], [ChannelNormalization("zscore")])[0][20:40, 20:40, 20:40]
    assert abs(whole_small.mean() - whole_large.mean()) > 1.0  # what the robust scheme avoids


def test_properties_json_round_trip():
    image, label = _case()
    pre = preprocess_case(image, _plan(), label)
    back = CaseProperties.from_dict(json.loads(json.dumps(pre.properties.to_dict())))
    assert back == pre.properties


def test_preprocess_errors():
    image, label = _case()
    with pytest.raises(DataError, match="2 channel"):
        preprocess_case(Image(np.concatenate([image.array] * 2), image.geometry), _plan(), label)
    bad = image.array.copy()
    bad[0, 5, 5, 5] = np.nan
    with pytest.raises(DataError, match="NaN or infinite"):
        preprocess_case(Image(bad, image.geometry, path=None), _plan(), label)
    wrong = label.array.copy()
    wrong[0, 0, 0, 0] = 7
    with pytest.raises(DataError, match=r"label values \[7\] are not among the plan's labels"):
        preprocess_case(image, _plan(), Image(wrong, label.geometry))
    with pytest.raises(DataError, match="label geometry differs"):
        preprocess_case(image, _plan(), Image(label.array, label.geometry.shifted([1, 0, 0])))
    with pytest.raises(DataError, match="2-D image where the plan expects 3-D"):
        preprocess_case(Image(image.array[..., 0], Geometry.create([1.0, 1.0])), _plan())
    pre = preprocess_case(image, _plan(), label)
    with pytest.raises(DataError, match="is not the preprocessed grid"):
        restore_prediction(np.zeros((3, 4, 4, 4), np.float32), pre.properties)


def test_preprocess_dataset_on_disk(tmp_path, make_nnunet):
    root = make_nnunet(cases=3)
    ds = load_dataset(root)
    plan = plan_dataset(ds, spatial_dims=2)
    out = preprocess_dataset(ds, plan, tmp_path / "pre")
    cases = load_preprocessed(out)
    assert [c.id for c in cases] == ds.case_ids
    assert isinstance(cases[0].image, np.memmap)
    _, label = ds.read_case(cases[1].id)
    np.testing.assert_array_equal(restore_prediction(np.asarray(cases[1].label), cases[1].properties), label.array)
    other = plan_dataset(ds, spatial_dims=3)
    with pytest.raises(DataError, match="another plan"):
        preprocess_dataset(ds, other, out)
