import json

import numpy as np
import pytest

from attnseg.data.dataset import load_dataset
from attnseg.data.geometry import Geometry
from attnseg.data.io import write_image
from attnseg.errors import DataError
from tests.fixtures import synthetic_case


def test_nnunet_layout(make_nnunet):
    root = make_nnunet(cases=3, channels=2, channel_names=["T2", "ADC"])
    ds = load_dataset(root)
    assert ds.layout == "nnunet" and ds.name == root.name
    assert ds.case_ids == ["case_000", "case_001", "case_002"]
    case = ds.cases[0]
    assert [p.name for p in case.images] == ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]
    assert case.label is not None and case.label.name == "case_000.nii.gz"
    assert ds.labels == {"background": 0, "organ": 1, "lesion": 2}
    assert ds.channel_names == {"0": "T2", "1": "ADC"} and ds.num_channels == 2
    assert ds.file_ending == ".nii.gz"
    assert ds.splits_path == root / "splits.json"
    image, label = ds.read_case("case_001")
    assert image.array.shape == (2, 12, 10, 8) and label is not None and label.array.shape == (1, 12, 10, 8)
    assert not ds.problems
    # dataset.json itself may be given
    assert load_dataset(root / "dataset.json").root == root


def test_nnunet_test_images_and_missing_pieces(make_nnunet):
    root = make_nnunet(cases=3, channels=2)
    (root / "imagesTs").mkdir()
    for c in range(2):
        (root / "imagesTs" / f"new_{c:04d}.nii.gz").write_bytes(
            (root / "imagesTr" / f"case_000_{c:04d}.nii.gz").read_bytes()
        )
    (root / "imagesTr" / "case_001_0001.nii.gz").unlink()
    (root / "labelsTr" / "case_002.nii.gz").unlink()
    (root / "labelsTr" / "ghost.nii.gz").write_bytes(b"")
    ds = load_dataset(root)
    assert [c.id for c in ds.test_cases] == ["new"] and ds.test_cases[0].label is None
    assert ds.case_ids == ["case_000", "case_002"]  # case_001 lacks a channel
    assert ds.case("case_002").label is None
    messages = [str(p) for p in ds.problems]
    assert any("case_001_0001.nii.gz: missing channel file" in m for m in messages)
    assert any("ghost.nii.gz: label without an image in imagesTr" in m for m in messages)


def test_msd_layout_with_four_d_images(tmp_path):
    root = tmp_path / "Task01_Tiny"
    rng = np.random.default_rng(0)
    g = Geometry.create([1.0, 1.0, 1.5])
    training = []
    for i in range(2):
        image, label = synthetic_case((8, 8, 6), rng)
        write_image(root / "imagesTr" / f"tiny_{i}.nii.gz", np.stack([image, image * 2]), g)
        write_image(root / "labelsTr" / f"tiny_{i}.nii.gz", label[None], g)
        training.append({"image": f"./imagesTr/tiny_{i}.nii.gz", "label": f"./labelsTr/tiny_{i}.nii.gz"})
    spec = {
        "name": "Tiny",
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "tumour"},
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    ds = load_dataset(root)
    assert ds.layout == "msd" and ds.case_ids == ["tiny_0", "tiny_1"]
    assert ds.labels == {"background": 0, "tumour": 1}  # turned round from value -> name
    assert ds.channel_names == {"0": "FLAIR", "1": "T1w"}
    image, label = ds.read_case("tiny_1")
    assert image.channels == 2 and label is not None


def test_paired_layout(tmp_path):
    rng = np.random.default_rng(0)
    g = Geometry.create([1.0, 1.0, 1.0])
    for name in ("a", "b"):
        image, label = synthetic_case((6, 6, 6), rng)
        write_image(tmp_path / "images" / f"{name}.nrrd", image[None], g)
        write_image(tmp_path / "labels" / f"{name}_seg.nrrd", label[None], g)
    (tmp_path / "images" / "notes.txt").write_text("hi")
    ds = load_dataset(tmp_path)
    assert ds.layout == "paired" and ds.case_ids == ["a", "b"]
    assert ds.cases[0].label is not None and ds.cases[0].label.name == "a_seg.nrrd"
    assert ds.labels is None and ds.file_ending == ".nrrd"
    assert any("notes.txt: ignored" in str(p) for p in ds.problems)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "empty folder; expected an nnU-Net dataset"),
        (lambda root: (root / "random.txt").write_text("x"), "no dataset found"),
        (lambda root: (root / "imagesTr").mkdir(), "dataset.json: missing"),
        (lambda root: (root / "dataset.json").write_text("{not json"), "dataset.json: not valid JSON"),
    ],
)
def test_not_a_dataset(tmp_path, setup, message):
    root = tmp_path / "d"
    root.mkdir()
    setup(root)
    with pytest.raises(DataError, match=message):
        load_dataset(root)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(tmp_path / "absent")


def test_bad_dataset_json(make_nnunet):
    root = make_nnunet(cases=1)
    spec = json.loads((root / "dataset.json").read_text())
    for broken, message in [
        ({**spec, "labels": {"background": 0, "tumour": [1, 2]}}, "region-based label 'tumour'"),
        ({**spec, "labels": {"organ": 1}}, "no label has value 0"),
        ({**spec, "labels": {"background": 0, "a": 1, "b": 1}}, "two labels share one value"),
        ({**spec, "file_ending": ".jpg"}, "unsupported file type"),
        ({**spec, "channel_names": {"1": "CT"}}, "numbered 0, 1, 2"),
    ]:
        (root / "dataset.json").write_text(json.dumps(broken))
        with pytest.raises(DataError, match=message):
            load_dataset(root)
