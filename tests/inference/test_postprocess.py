"""Post-processing chosen from the training labels' topology and validation, applied by the predictor."""

import json

import numpy as np

from attnseg.cli import main
from attnseg.data import read_image
from attnseg.inference.postprocess import decide, keep_largest_components, single_component_classes
from attnseg.inference.predictor import Predictor
from attnseg.model_dir import ModelDir


def test_single_component_classes_from_the_labels():
    one = np.zeros((8, 8), int)
    one[1:3, 1:3] = 1  # class 1: one piece
    one[5:7, 1:3] = 2
    one[5:7, 5:7] = 2  # class 2: two pieces (two lungs in one class)
    other = np.zeros((8, 8), int)
    other[2:6, 2:6] = 1
    assert single_component_classes([one, other], num_classes=4) == [1, 3]  # 3 never occurs: no evidence against


def test_decide_keeps_what_validation_does_not_refute():
    validation = {
        "val_dice_brain": 0.90, "val_dice_brain_largest_component": 0.93,
        "val_dice_tumour": 0.60, "val_dice_tumour_largest_component": 0.55,
    }  # fmt: skip
    assert list(decide(["brain", "tumour"], validation)) == ["brain"]
    assert list(decide(["brain", "tumour"], None)) == ["brain", "tumour"]


def test_training_writes_the_decision_and_the_predictor_applies_it(trained_model, tiny_dataset, tmp_path):
    decision = json.loads((trained_model / ModelDir.POSTPROCESSING).read_text())
    assert decision["decided_on"] == "validation"
    assert set(decision["largest_component"]) <= set(decision["candidates"]) <= {"organ", "lesion"}

    scan = read_image(tiny_dataset / "imagesTr" / "case_000_0000.nii.gz")
    speck = scan.array.copy()
    speck[0, 0, 0, 0] = scan.array.max() * 3  # a bright isolated voxel, likely predicted as foreground
    image = type(scan)(speck, scan.geometry, scan.path)
    plain, _ = Predictor([trained_model], largest_component=False).predict_image(image)
    forced, _ = Predictor([trained_model], largest_component=True).predict_image(image)
    chosen, _ = Predictor([trained_model]).predict_image(image)
    names = {1: "organ", 2: "lesion"}
    classes = [k for k, name in names.items() if name in decision["largest_component"]]
    np.testing.assert_array_equal(chosen[0], keep_largest_components(plain[0], classes))
    np.testing.assert_array_equal(forced[0], keep_largest_components(plain[0], [1, 2]))


def test_no_postprocessing_flag(trained_model, tiny_dataset, tmp_path):
    image = tiny_dataset / "imagesTr" / "case_001_0000.nii.gz"
    assert main(["predict", "-m", str(trained_model), "-i", str(image), "-o", str(tmp_path / "a"),
                 "--no-postprocessing", "--no-progress"]) == 0  # fmt: skip
    plain = read_image(tmp_path / "a" / "case_001.nii.gz")
    expected, _ = Predictor([trained_model], largest_component=False).predict_image(read_image(image))
    np.testing.assert_array_equal(plain.array, expected)
