import json

import numpy as np
import pytest

from attnseg.data.check import check_dataset
from attnseg.data.dataset import load_dataset
from attnseg.data.io import read_image
from attnseg.data.plan import ChannelNormalization, Plan, plan_dataset, scheme_for_channel
from attnseg.errors import ConfigError, DataError, OutputExistsError


def test_plan_2d_defaults(make_nnunet):
    root = make_nnunet(cases=3, spacing=(0.8, 0.8, 2.0), channel_names=["MR"])
    plan = plan_dataset(root, spatial_dims=2)
    assert plan.image_dims == 3 and plan.spatial_dims == 2
    assert plan.slice_axis == 2  # the coarsest axis
    assert plan.target_spacing[2] is None  # the slice axis keeps its own spacing
    assert plan.target_spacing[:2] == pytest.approx((0.8, 0.8))  # NIfTI stores float32
    assert plan.patch_size == (16, 16)  # cropped 10 x 8 slices, rounded up to a multiple of 16
    assert plan.labels == {"background": 0, "organ": 1, "lesion": 2}
    assert plan.class_values == [0, 1, 2] and plan.class_names == ["background", "organ", "lesion"]
    assert plan.normalization[0].scheme == "robust_zscore"
    assert plan.in_plane_axes == (0, 1)


def test_plan_3d_and_overrides(make_nnunet):
    root = make_nnunet(cases=3, spacing=(0.8, 0.8, 2.0))
    plan = plan_dataset(root, spatial_dims=3)
    assert plan.slice_axis is None and plan.target_spacing == pytest.approx((0.8, 0.8, 2.0))
    assert len(plan.patch_size) == 3 and all(p % 16 == 0 for p in plan.patch_size)
    custom = plan_dataset(
        root,
        spatial_dims=2,
        target_spacing=[1.6, 1.6, None],
        slice_axis=0,
        patch_size=[32, 32],
        normalization={0: "none"},
    )
    assert custom.target_spacing == (1.6, 1.6, None) and custom.slice_axis == 0 and custom.patch_size == (32, 32)
    assert custom.normalization[0].scheme == "none"
    # the axis left unresampled is the slicing axis, even where the others tie
    coarse = plan_dataset(root, spatial_dims=2, target_spacing=[2.0, 2.0, None])
    assert coarse.slice_axis == 2 and coarse.patch_size == (16, 16)
    isotropic = plan_dataset(root, spatial_dims=2, target_spacing=[1.0, 1.0, 1.0])
    assert isotropic.slice_axis == 2  # the data's coarsest axis


def test_patch_multiple_for_networks_that_pad_further(make_nnunet):
    """A network that pads to 32 (the multi-scale guided network) gets patches of 32s, still covering
    the median case; the default is the U-Net's 16; a size given by hand is kept."""
    root = make_nnunet(cases=3, shape=(40, 36, 20), spacing=(1.0, 1.0, 1.0))
    sixteen = plan_dataset(root, spatial_dims=3)
    thirty_two = plan_dataset(root, spatial_dims=3, patch_multiple=32)
    assert sixteen.patch_size == (48, 48, 32)  # the 38 x 34 x 18 cropped median, up to 16s
    assert thirty_two.patch_size == (64, 64, 32)
    assert plan_dataset(root, spatial_dims=3, patch_size=[40, 40, 20], patch_multiple=32).patch_size == (40, 40, 20)


def test_ct_normalisation_statistics_are_the_foreground_ones(make_nnunet):
    root = make_nnunet(cases=2, channel_names=["CT"])
    plan = plan_dataset(root, spatial_dims=2)
    norm = plan.normalization[0]
    # by hand: all foreground voxels of both cases (fewer than 10,000 each, so no sampling)
    values = []
    for case in load_dataset(root).cases:
        image, label = read_image(case.images[0]).array[0], read_image(case.label).array[0]
        values.append(image[label > 0].astype(np.float64))
    values = np.concatenate(values)
    assert norm.scheme == "ct"
    assert norm.mean == pytest.approx(values.mean()) and norm.std == pytest.approx(values.std())
    assert norm.lower == pytest.approx(np.percentile(values, 0.5))
    assert norm.upper == pytest.approx(np.percentile(values, 99.5))


def test_anisotropic_target_spacing_follows_nnunet(tmp_path, make_nnunet):
    """A coarse, short third axis takes the 10th percentile of its spacings, not the median."""
    from attnseg.data.check import CaseStats, Fingerprint

    cases = [
        CaseStats(f"c{i}", (0.7, 0.7, z), (256, 256, 20), (256, 256, 20), "LPS", {0: 1, 1: 1}, [])
        for i, z in enumerate([5.0, 5.0, 5.0, 3.0, 3.0, 5.0, 5.0, 5.0, 5.0, 5.0])
    ]
    fp = Fingerprint(cases=cases, foreground_samples=[np.ones(3)], spatial_dims=3, num_channels=1)
    root = make_nnunet(cases=1)
    plan = plan_dataset(root, spatial_dims=3, fingerprint=fp)
    assert plan.target_spacing[:2] == (0.7, 0.7)
    assert plan.target_spacing[2] == pytest.approx(np.percentile([c.spacing[2] for c in cases], 10))


def test_plan_json_round_trip_and_atomic_save(tmp_path, make_nnunet):
    plan = plan_dataset(make_nnunet(cases=2, channel_names=["CT"]), spatial_dims=2)
    path = plan.save(tmp_path / "model" / "plan.json")
    data = json.loads(path.read_text())
    assert data["target_spacing"][2] is None and data["normalization"][0]["scheme"] == "ct"
    assert Plan.load(path) == plan
    with pytest.raises(OutputExistsError, match=r"plan\.json exists"):
        plan.save(path)
    plan.save(path, overwrite=True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["plan.json"]


def test_plan_validation():
    with pytest.raises(ConfigError, match="unknown normalisation scheme"):
        ChannelNormalization("minmax")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="slice_axis"):
        Plan(2, 3, (1.0, 1.0, None), None, (16, 16), [ChannelNormalization("none")], {"background": 0}, ["x"])
    with pytest.raises(ConfigError, match="version 9"):
        Plan.from_dict({"version": 9})
    assert scheme_for_channel("ct") == "ct" and scheme_for_channel("noNorm") == "none"
    assert scheme_for_channel("T2") == "robust_zscore" and scheme_for_channel("rescale_to_0_1") == "rescale"
    assert scheme_for_channel("zscore") == "zscore"


def test_plan_refuses_broken_dataset(make_nnunet):
    root = make_nnunet(cases=2)
    (root / "labelsTr" / "case_000.nii.gz").unlink()
    with pytest.raises(DataError, match="no label for this image"):
        plan_dataset(root)
    report = check_dataset(root)
    assert not report.ok


def test_3d_plan_needs_volumes(tmp_path):
    from attnseg.data.geometry import Geometry
    from attnseg.data.io import write_image
    from tests.fixtures import synthetic_case

    image, label = synthetic_case((8, 8), np.random.default_rng(0))
    write_image(tmp_path / "images" / "a.png", image[None].astype(np.uint8), Geometry.create([1.0, 1.0]))
    write_image(tmp_path / "labels" / "a.png", label[None], Geometry.create([1.0, 1.0]))
    with pytest.raises(ConfigError, match="3D plan needs volumes"):
        plan_dataset(tmp_path, spatial_dims=3)
    plan = plan_dataset(tmp_path, spatial_dims=2)
    assert plan.image_dims == 2 and plan.slice_axis is None
    assert plan.labels == {"background": 0, "label_1": 1}  # undeclared labels named after their values
