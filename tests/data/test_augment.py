import numpy as np
import pytest
import torch

from attnseg.data.augment import AugmentConfig, build_augmentation
from attnseg.errors import ConfigError

# every spatial transform fires, no intensity change
SPATIAL_ALWAYS = AugmentConfig(flip_prob=0.5, affine_prob=1.0, elastic_prob=1.0).without_intensity()


def _item(spatial_dims, seed=0):
    """A label of blocks, and an image equal to the label: alignment is visible voxel by voxel."""
    rng = np.random.default_rng(seed)
    shape = (48, 40) if spatial_dims == 2 else (24, 20, 16)
    label = np.zeros(shape, np.int64)
    for value in (1, 2, 3):
        start = [int(rng.integers(2, s // 2)) for s in shape]
        label[tuple(slice(a, a + s // 3) for a, s in zip(start, shape, strict=True))] = value
    return {"image": torch.from_numpy(label[None].astype(np.float32)), "label": torch.from_numpy(label)}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_nearest_image_moves_exactly_with_the_label(spatial_dims):
    config = AugmentConfig(
        flip_prob=0.5, affine_prob=1.0, elastic_prob=1.0 if spatial_dims == 2 else 0.5, image_mode="nearest"
    ).without_intensity()
    augment = build_augmentation(spatial_dims, config, seed=0)
    for seed in range(4):
        item = _item(spatial_dims, seed)
        out = augment(item)
        assert out["label"].dtype == torch.int64 and out["label"].shape == item["label"].shape
        assert torch.equal(out["image"][0].long(), out["label"])
        assert not torch.equal(out["label"], item["label"])  # something did move
        assert set(out["label"].unique().tolist()) <= {0, 1, 2, 3}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_linear_image_and_nearest_label_stay_aligned(spatial_dims):
    """Image channels = one-hot label, interpolated linearly; the label by nearest neighbour. Each class
    keeps its centre (to 3/4 voxel) in both, and the most likely class of the image differs from the label only within
    2 voxels of a label edge (a blend; zooming out and elastic warps widen it)."""
    pool = torch.nn.functional.max_pool2d if spatial_dims == 2 else torch.nn.functional.max_pool3d
    augment = build_augmentation(spatial_dims, SPATIAL_ALWAYS, seed=1)
    for seed in range(3):
        item = _item(spatial_dims, seed)
        item["image"] = torch.nn.functional.one_hot(item["label"], 4).movedim(-1, 0).float()
        out = augment(item)
        label = out["label"]
        for k in (1, 2, 3):
            weights = out["image"][k]
            if weights.sum() < 20:
                continue
            grid = torch.stack(torch.meshgrid(*[torch.arange(n) for n in label.shape], indexing="ij")).float()
            centre_image = (grid * weights).flatten(1).sum(1) / weights.sum()
            centre_label = torch.nonzero(label == k).float().mean(0)
            assert torch.allclose(centre_image, centre_label, atol=0.75)  # a one-voxel shift would fail
        edge = (pool(label[None].float(), 5, 1, 2) != -pool(-label[None].float(), 5, 1, 2))[0]
        mismatch = out["image"].argmax(0) != label
        assert mismatch.any()  # linear interpolation did blend somewhere
        assert not (mismatch & ~edge).any()


def test_intensity_transforms_leave_the_label_alone():
    config = AugmentConfig(
        flip_prob=0.0,
        affine_prob=0.0,
        elastic_prob=0.0,
        gamma_prob=1.0,
        noise_prob=1.0,
        contrast_prob=1.0,
        brightness_prob=1.0,
    )
    item = _item(2)
    item["image"] = item["image"] + torch.randn_like(item["image"])
    out = build_augmentation(2, config, seed=0)(item)
    assert torch.equal(out["label"], item["label"]) and not torch.allclose(out["image"], item["image"])


def test_seeded_augmentation_is_reproducible():
    a = build_augmentation(2, seed=7)(_item(2))
    b = build_augmentation(2, seed=7)(_item(2))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_shape_errors():
    with pytest.raises(ConfigError, match="spatial_dims 2 or 3"):
        build_augmentation(4)
    with pytest.raises(ConfigError, match="expects image"):
        build_augmentation(2)({"image": torch.zeros(1, 4, 4, 4), "label": torch.zeros(4, 4, 4)})
