"""The built-in real datasets: prepared from the wheels of nilearn and slicerio, then checked."""

import json

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.data.builtin import MNI_FILES, Slab, _package_file, prepare_builtin, slab_layout, validation_folds
from attnseg.data.check import check_dataset
from attnseg.data.dataset import load_dataset
from attnseg.data.io import read_image
from attnseg.data.plan import plan_dataset
from attnseg.data.splits import load_splits
from attnseg.errors import DataError


@pytest.fixture(scope="module")
def mni(tmp_path_factory):
    return prepare_builtin("mni152-tissue", tmp_path_factory.mktemp("builtin") / "mni")


@pytest.fixture(scope="module")
def ctchest(tmp_path_factory):
    return prepare_builtin("ctchest", tmp_path_factory.mktemp("builtin") / "ct")


def _slab_info(root):
    spec = json.loads((root / "dataset.json").read_text())
    return spec, {s["id"]: s for s in spec["attnseg"]["slabs"]}


def test_slab_layout_keeps_a_gap_around_validation():
    slabs = slab_layout(0, 40, [(15, 20)], gap=3, train_thickness=6)
    assert Slab(15, 20, "val") in slabs
    train = [s for s in slabs if s.role == "train"]
    assert [(s.start, s.stop) for s in train] == [(0, 6), (6, 12), (23, 29), (29, 34), (34, 40)]
    used = sorted(i for s in slabs for i in range(s.start, s.stop))
    assert set(range(40)) - set(used) == {12, 13, 14, 20, 21, 22}  # the gaps


@pytest.mark.parametrize("name", ["mni", "ctchest"])
def test_builtin_dataset_passes_the_checks(name, request):
    root = request.getfixturevalue(name)
    report = check_dataset(root)
    assert report.ok and not report.warnings, report.format()
    assert (root / "README.md").exists()
    readme = (root / "README.md").read_text()
    assert "not* a clinical" in readme and "## Licence" in readme and "## Source" in readme


@pytest.mark.parametrize("name", ["mni", "ctchest"])
def test_slabs_sit_where_they_were_and_splits_keep_a_gap(name, request):
    root = request.getfixturevalue(name)
    spec, slabs = _slab_info(root)
    gap = spec["attnseg"]["gap_slices"]
    ds = load_dataset(root)
    split = load_splits(ds.splits_path, ds.case_ids)
    assert len(split) == 1 and not set(split[0]["train"]) & set(split[0]["val"])
    assert sorted(split[0]["train"] + split[0]["val"]) == ds.case_ids
    train_slices = {i for c in split[0]["train"] for i in range(slabs[c]["start"], slabs[c]["stop"])}
    for case_id in split[0]["val"]:
        s = slabs[case_id]
        nearby = set(range(s["start"] - gap, s["stop"] + gap))
        assert not nearby & train_slices  # gap slices on both sides belong to nobody
    # each slab's origin is the world position of its first slice in the original volume
    first = ds.read_case(ds.case_ids[0])[0].geometry
    for case in ds.cases:
        geometry = read_image(case.images[0]).geometry
        np.testing.assert_allclose(geometry.origin, first.index_to_world([0, 0, slabs[case.id]["start"]]), atol=1e-4)
        assert read_image(case.label).geometry.allclose(geometry, atol=1e-6)


def test_mni_labels_and_validation_slabs(mni):
    ds = load_dataset(mni)
    assert ds.labels == {"background": 0, "grey_matter": 1, "white_matter": 2}
    _, slabs = _slab_info(mni)
    val = [c for c in ds.cases if slabs[c.id]["role"] == "val"]
    assert len(val) == 3
    for case in val:  # validation slabs lie in the brain: both tissues on every slice
        label = read_image(case.label).array[0]
        for z in range(label.shape[2]):
            assert (label[..., z] == 1).sum() > 1000 and (label[..., z] == 2).sum() > 500
    train_slices = sum(s["stop"] - s["start"] for s in slabs.values() if s["role"] == "train")
    assert train_slices >= 100
    # the slabs reassemble the template exactly
    t1 = read_image(_package_file("nilearn", "nilearn.datasets.data", MNI_FILES["t1"]))
    case = ds.cases[0]
    s = slabs[case.id]
    np.testing.assert_array_equal(read_image(case.images[0]).array, t1.array[..., s["start"] : s["stop"]])
    plan = plan_dataset(ds, spatial_dims=2)
    assert plan.slice_axis == 2 and plan.normalization[0].scheme == "robust_zscore"  # statistics of the brain


def test_ctchest_labels_and_plan(ctchest):
    ds = load_dataset(ctchest)
    assert ds.file_ending == ".nrrd"
    assert list(ds.labels) == [
        "background",
        "ribs",
        "cervical vertebral column",
        "thoracic vertebral column",
        "lumbar vertebral column",
        "right lung",
        "left lung",
        "tissue",
    ]
    image = read_image(ds.cases[0].images[0])
    assert image.geometry.spacing == pytest.approx((3.046875953674, 3.046875953674, 10.0))
    assert image.geometry.orientation() == "RAS"
    plan = plan_dataset(ds, spatial_dims=2)
    assert plan.slice_axis == 2 and plan.normalization[0].scheme == "ct"
    assert plan.normalization[0].lower < -800 and plan.normalization[0].upper > 300


def test_prepare_command_and_overwrite(tmp_path, capsys):
    out = tmp_path / "ct"
    assert main(["dataset", "prepare", "ctchest", str(out)]) == 0
    assert "attnseg dataset check" in capsys.readouterr().out
    assert main(["dataset", "check", str(out)]) == 0
    assert main(["dataset", "prepare", "ctchest", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["dataset", "prepare", "ctchest", str(out), "--overwrite"]) == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match=r"holds no dataset\.json; refusing"):
        prepare_builtin("ctchest", tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").exists()
    with pytest.raises(DataError, match="unknown built-in dataset 'nope'"):
        prepare_builtin("nope", tmp_path / "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "mine"]  # no staging folders left


def test_validation_folds_cross_the_volume_and_include_the_shipped_slab():
    folds = validation_folds("ctchest", 5)
    assert folds == [[(0, 6)], [(7, 13)], [(14, 20)], [(21, 27)], [(28, 34)]]  # fold 2: the dataset as shipped
    mni = validation_folds("mni152-tissue", 3)
    assert [b - a for [(a, b)] in mni] == [8, 8, 8] and mni[0][0][0] == 0 and mni[-1][0][1] == 155
    with pytest.raises(DataError, match="ctchest: 6 folds of 6 slices do not fit 34 slices"):
        validation_folds("ctchest", 6)
    with pytest.raises(DataError, match="1 folds"):
        validation_folds("ctchest", 1)


def test_prepare_with_another_validation_slab(tmp_path):
    root = prepare_builtin("ctchest", tmp_path / "fold0", validation=[(0, 6)])
    _, slabs = _slab_info(root)
    roles = {
        role: sorted((s["start"], s["stop"]) for s in slabs.values() if s["role"] == role) for role in ("train", "val")
    }
    assert roles["val"] == [(0, 6)]
    assert roles["train"][0][0] == 8 and roles["train"][-1][1] == 34  # the gap: slices 6 and 7
    assert sum(b - a for a, b in roles["train"]) == 26
    report = check_dataset(root)
    assert report.ok and not report.warnings, report.format()
    assert "| ctchest_z000 | 0-5 | 6 | val |" in (root / "README.md").read_text()


@pytest.mark.parametrize(
    ("validation", "message"),
    [
        ([(30, 40)], r"validation slabs \[\(30, 40\)\] must be non-empty ranges of slices in \[0, 34\)"),
        ([(5, 5)], "must be non-empty"),
        ([], "must be non-empty"),
        ([(0, 6), (4, 10)], "overlap"),
        ([(0, 34)], "leave no slices to train on"),
    ],
)
def test_a_validation_layout_that_cannot_be_cut_is_refused(tmp_path, validation, message):
    with pytest.raises(DataError, match=f"^ctchest: .*{message}"):
        prepare_builtin("ctchest", tmp_path / "ct", validation=validation)
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging folder left
