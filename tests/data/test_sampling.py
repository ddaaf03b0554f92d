import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from attnseg.data.augment import build_augmentation
from attnseg.data.geometry import Geometry
from attnseg.data.io import Image
from attnseg.data.plan import ChannelNormalization, Plan
from attnseg.data.preprocess import PreprocessedCase, preprocess_case
from attnseg.data.sampling import PatchDataset, SliceDataset, split_cases
from attnseg.data.splits import load_splits, make_splits, save_splits
from attnseg.errors import DataError, OutputExistsError


def _plan(spatial_dims=2):
    return Plan(
        spatial_dims=spatial_dims,
        image_dims=3,
        target_spacing=(1.0, 1.0, None) if spatial_dims == 2 else (1.0, 1.0, 1.0),
        slice_axis=2 if spatial_dims == 2 else None,
        patch_size=(16, 16) if spatial_dims == 2 else (8, 8, 8),
        normalization=[ChannelNormalization("zscore")],
        labels={"background": 0, "lesion": 1},
        channel_names=["MR"],
        crop_to_nonzero=False,
    )


def _lesion_case(case_id: str, shape=(24, 24, 30), lesion_slice=17, spatial_dims=2) -> PreprocessedCase:
    """A volume whose only foreground is 2 voxels (0.01% of the voxels) on one slice."""
    rng = np.random.default_rng(int(case_id.split("_")[1]))
    image = rng.normal(100, 10, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[10:12, 12, lesion_slice] = 1
    g = Geometry.create([1.0, 1.0, 1.0])
    return preprocess_case(Image(image[None], g), _plan(spatial_dims), Image(label[None], g), case_id=case_id)


def _cases(n=4, **kw):
    return [_lesion_case(f"case_{i}", lesion_slice=5 + 5 * i, **kw) for i in range(n)]


def test_items_have_the_documented_form():
    ds = SliceDataset.from_plan(_cases(2), _plan(), samples_per_epoch=5)
    item = ds[0]
    assert set(item) == {"image", "label"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 16, 16)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (16, 16)
    full = SliceDataset(_cases(2), axis=2, random=False, with_meta=True)
    assert full[0]["image"].shape == (1, 24, 24) and full[0]["case"] == "case_0" and full[0]["slice"] == 0


def test_foreground_oversampling_finds_a_tiny_lesion():
    cases = _cases(4)
    n = 600
    with_fg = SliceDataset.from_plan(cases, _plan(), samples_per_epoch=n, foreground_fraction=1 / 3, seed=1)
    hits = sum(int(with_fg[i]["label"].sum() > 0) for i in range(n))
    # one lesion slice in 30 per case: uniform draws hit it 1/30 of the time; oversampling adds 1/3
    expected = 1 / 3 + (2 / 3) * (1 / 30)
    assert abs(hits / n - expected) < 0.06
    without = SliceDataset.from_plan(cases, _plan(), samples_per_epoch=n, foreground_fraction=0.0, seed=1)
    assert sum(int(without[i]["label"].sum() > 0) for i in range(n)) / n < 0.08


def test_samples_are_deterministic_and_change_with_epoch():
    a = SliceDataset.from_plan(_cases(2), _plan(), samples_per_epoch=8, seed=3)
    b = SliceDataset.from_plan(_cases(2), _plan(), samples_per_epoch=8, seed=3)
    for i in range(8):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["label"], b[i]["label"])
    first = a[0]["image"].clone()
    a.set_epoch(1)
    assert not torch.equal(a[0]["image"], first)
    a.set_epoch(0)
    assert torch.equal(a[0]["image"], first)


def test_data_loader_workers_do_not_change_the_batches():
    augment = build_augmentation(2)
    ds = SliceDataset.from_plan(_cases(2), _plan(), samples_per_epoch=8, seed=5, transform=augment)
    single = [b["image"] for b in DataLoader(ds, batch_size=4, num_workers=0)]
    workers = [b["image"] for b in DataLoader(ds, batch_size=4, num_workers=2)]
    for x, y in zip(single, workers, strict=True):
        assert torch.equal(x, y)


def test_validation_mode_visits_every_slice_once_in_order():
    cases = _cases(2)
    ds = SliceDataset.from_plan(cases, _plan(), random=False, with_meta=True)
    assert len(ds) == 60
    seen = [(ds[i]["case"], ds[i]["slice"]) for i in range(len(ds))]
    assert seen == [(c.id, s) for c in cases for s in range(30)]
    lesion = ds[17]  # case_0 has its lesion on slice 5
    assert ds[5]["label"].sum() == 2 and lesion["label"].sum() == 0


def test_patches_3d():
    cases = _cases(2, spatial_dims=3)
    ds = PatchDataset.from_plan(cases, _plan(3), samples_per_epoch=40, foreground_fraction=1.0, with_meta=True)
    item = ds[0]
    assert item["image"].shape == (1, 8, 8, 8) and item["label"].shape == (8, 8, 8)
    assert all(ds[i]["label"].sum() > 0 for i in range(40))  # every draw centred on the lesion
    small = PatchDataset(cases, (32, 32, 40), samples_per_epoch=2)  # bigger than the volume: padded
    assert small[0]["image"].shape == (1, 32, 32, 40)


def test_splits_are_case_level_deterministic_and_disjoint(tmp_path):
    ids = [f"case_{i:02d}" for i in range(11)]
    splits = make_splits(ids, folds=5, seed=12345)
    assert splits == make_splits(list(reversed(ids)), folds=5, seed=12345)
    assert sorted(c for s in splits for c in s["val"]) == ids  # each case validated exactly once
    for s in splits:
        assert not set(s["train"]) & set(s["val"]) and sorted(s["train"] + s["val"]) == ids
    path = save_splits(tmp_path / "splits.json", splits)
    assert load_splits(path, ids) == splits
    with pytest.raises(OutputExistsError, match="exists"):
        save_splits(path, splits)
    with pytest.raises(DataError, match="unknown cases"):
        load_splits(path, ids[:3])
    with pytest.raises(DataError, match="both train and val"):
        save_splits(tmp_path / "bad.json", [{"train": ["a", "b"], "val": ["b"]}])
    with pytest.raises(DataError, match="cannot make 5 folds"):
        make_splits(["a", "b"], folds=5)


def test_slices_of_a_case_never_land_on_both_sides():
    cases = _cases(4)
    split = make_splits([c.id for c in cases], folds=2, seed=0)[0]
    train, val = split_cases(cases, split)
    train_ds = SliceDataset.from_plan(train, _plan(), samples_per_epoch=200, with_meta=True)
    val_ds = SliceDataset.from_plan(val, _plan(), random=False, with_meta=True)
    train_seen = {train_ds[i]["case"] for i in range(len(train_ds))}
    val_seen = {val_ds[i]["case"] for i in range(len(val_ds))}
    assert train_seen == set(split["train"]) and val_seen == set(split["val"]) and not train_seen & val_seen
