"""Domain randomisation (RandTissueSynthesisd): per-class intensities drawn anew, the label map kept."""

import numpy as np
import torch

from attnseg.data.augment import AugmentConfig, build_augmentation
from attnseg.data.synthesis import RandTissueSynthesisd, kmeans_1d


def _head():
    """A 2D 'head': air (0), a bright scalp ring (background label), a brain (label 1) of dark CSF rim (1.0)
    around grey (2.0) and white (3.0) tissue."""
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    image = np.zeros((64, 64), np.float32)
    image[(r > 24) & (r <= 28)] = 4.0  # scalp
    image[r <= 20] = 1.0  # CSF rim
    image[r <= 17] = 2.0
    image[r <= 9] = 3.0
    label = (r <= 20).astype(np.int64)
    return image, label


def _item(image, label):
    return {"image": torch.from_numpy(image[None].copy()), "label": torch.from_numpy(label[None].astype(np.float32))}


def test_kmeans_1d_finds_three_levels():
    values = np.array([1.0] * 50 + [5.0] * 30 + [9.0] * 20)
    classes, centres = kmeans_1d(values[::-1], 3)
    np.testing.assert_allclose(centres, [1.0, 5.0, 9.0])
    assert classes.tolist() == [2] * 20 + [1] * 30 + [0] * 50
    classes, centres = kmeans_1d(np.full(10, 7.0), 3)  # one distinct value: one class
    assert centres.tolist() == [7.0] and set(classes.tolist()) == {0}


def test_each_tissue_class_gets_one_new_intensity_and_the_label_is_kept():
    image, label = _head()
    synth = RandTissueSynthesisd(prob=1.0, classes=(3, 2), blur=(0.0, 0.0), noise=(0.0, 0.0))
    synth.set_random_state(3)
    item = _item(image, label)
    seen = set()
    for _ in range(5):
        out = synth(item)
        assert torch.equal(out["label"], item["label"])  # the label map is untouched
        new = out["image"][0].numpy()
        assert new.shape == image.shape and new.dtype == np.float32
        # one value per original tissue class: air, scalp, CSF, grey, white
        for level in (0.0, 4.0, 1.0, 2.0, 3.0):
            region = new[image == level]
            assert np.ptp(region) < 1e-5, level
        # air stays the darkest-but-near-0 class: rescaled like the input over the non-air voxels
        tissue = image > 0
        assert abs(new[tissue].mean() - image[tissue].mean()) < 1e-4
        assert abs(new[tissue].std() - image[tissue].std()) < 1e-3
        seen.add(tuple(np.round([new[image == level][0] for level in (1.0, 2.0, 3.0)], 3)))
    assert len(seen) == 5  # a new contrast every time
    assert any(not (a < b < c) for a, b, c in seen)  # not only the training head's ordering


def test_wider_csf_moves_the_brains_edge_tissue_into_the_csf_class_only():
    image, label = _head()
    image[label == 1] = 2.0  # no CSF rim: grey matter touches the edge of the mask
    image[(label == 1) & (np.hypot(*(np.mgrid[:64, :64] - 32)) <= 9)] = 3.0
    image[(label == 1) & (np.hypot(*(np.mgrid[:64, :64] - 32)) <= 3)] = 0.5  # a little dark class in the centre
    widen = RandTissueSynthesisd(prob=0.0, csf_prob=1.0, csf_width=(2.0, 4.0))
    widen.set_random_state(0)
    out = widen(_item(image, label))
    new = out["image"][0].numpy()
    assert torch.equal(out["label"], torch.from_numpy(label[None].astype(np.float32)))
    changed = new != image
    r = np.hypot(*(np.mgrid[:64, :64] - 32))
    assert changed.any() and (label[changed] == 1).all()  # only the foreground changes
    assert (r[changed] > 20 - 4 - 3).all()  # and only within the widest width (+ a blend) of its edge
    edge = (r > 19.5) & (r <= 20)
    assert changed[edge].all()  # the edge itself everywhere
    # a CSF band: one intensity between the air (0) and the foreground's darkest class (0.5), on its own
    assert np.ptp(new[edge]) < 1e-5 and 0.0 <= new[edge][0] <= 0.5


def test_seeded_synthesis_is_reproducible_and_in_the_pipeline():
    image, label = _head()
    config = AugmentConfig(synth_prob=1.0, csf_prob=0.5).without_intensity()
    assert config.synth_prob == 0.0  # the spatial part leaves synthesis out
    config = AugmentConfig(
        synth_prob=1.0, csf_prob=0.5, flip_prob=0.0, affine_prob=0.0, elastic_prob=0.0, gamma_prob=0.0,
        noise_prob=0.0, contrast_prob=0.0, brightness_prob=0.0, bias_field_prob=0.0, blur_prob=0.0,
        low_resolution_prob=0.0,
    )  # fmt: skip
    item = {"image": torch.from_numpy(image[None].copy()), "label": torch.from_numpy(label)}
    first = build_augmentation(2, config, seed=7)(item)
    second = build_augmentation(2, config, seed=7)(item)
    assert torch.equal(first["image"], second["image"])
    assert torch.equal(first["label"], item["label"])
    assert not torch.allclose(first["image"][0], item["image"][0])
    # 3D works the same way
    volume = {
        "image": torch.from_numpy(np.stack([image] * 4, -1)[None]),
        "label": torch.from_numpy(np.stack([label] * 4, -1)),
    }
    out = build_augmentation(3, config, seed=1)(volume)
    assert out["image"].shape == volume["image"].shape and torch.equal(out["label"], volume["label"])


def test_labels_of_several_classes_keep_their_contrast():
    """Grey and white matter are defined by their contrast: such items are left as they are."""
    image, label = _head()
    label[image == 3.0] = 2
    item = _item(image, label)
    synth = RandTissueSynthesisd(prob=1.0, csf_prob=1.0)
    synth.set_random_state(0)
    assert synth(item) is item
    synth = RandTissueSynthesisd(prob=1.0, max_foreground=2)
    synth.set_random_state(0)
    assert not torch.equal(synth(item)["image"], item["image"])
