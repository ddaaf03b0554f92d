"""Post-processing chosen from the training labels' topology and validation, applied by the predictor."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from attnseg.cli import main
from attnseg.data import read_image, write_image
from attnseg.inference.postprocess import (
    LARGEST_COMPONENT,
    decide,
    keep_largest_components,
    single_component_classes,
)
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


def _largest_by_hand(classes: np.ndarray, values: list[int]) -> np.ndarray:
    """The expected post-processing, written out independently of keep_largest_components: for each
    class in ``values``, every face-connected piece but the biggest becomes background."""
    out = classes.copy()
    for value in values:
        pieces, count = ndimage.label(classes == value)
        if count == 0:  # the class is absent
            continue
        sizes = [int((pieces == piece).sum()) for piece in range(1, count + 1)]
        biggest = 1 + sizes.index(max(sizes))
        out[(pieces > 0) & (pieces != biggest)] = 0
    return out


def test_largest_component_within_the_box_equals_the_whole_grid():
    """Labelling each class within its bounding box gives the whole-grid result: pieces touching the grid's
    faces and corners, many pieces with ties in size (the first in raster order wins both ways), a class
    spanning the whole grid, a class absent, 2-D and 3-D."""
    rng = np.random.default_rng(3)
    for shape in [(9, 7), (6, 8, 5), (1, 5, 4)]:
        for _ in range(20):
            classes = rng.choice(4, size=shape, p=[0.4, 0.3, 0.2, 0.1]).astype(np.uint8)
            for values in ([1, 2, 3], [3], [1, 5]):  # 5: absent
                np.testing.assert_array_equal(
                    keep_largest_components(classes, values), _largest_by_hand(classes, values)
                )
    edges = np.zeros((6, 6, 6), np.uint8)
    edges[0, 0, 0] = edges[5, 5, 5] = 1  # two single voxels in opposite corners: a tie, the first is kept
    edges[0, :, 4:] = 2  # 12 voxels on one face
    edges[5, :5, :] = 2  # 30 on the opposite face: the larger piece comes second in raster order
    kept = keep_largest_components(edges, [1, 2, 3])
    np.testing.assert_array_equal(kept, _largest_by_hand(edges, [1, 2, 3]))
    assert kept[0, 0, 0] == 1 and kept[5, 5, 5] == 0 and kept[0, 0, 4] == 0 and kept[5, 0, 0] == 2


def _pieces(mask: np.ndarray, value: int) -> int:
    return ndimage.label(mask == value)[1]


@pytest.fixture
def two_scans_in_one(tiny_dataset, tmp_path) -> Path:
    """Two training scans side by side in one image: two organs, so the organ (and the lesion) the model
    predicts comes in several pieces, and keeping the largest one must change the mask."""
    first, second = (read_image(tiny_dataset / "imagesTr" / f"case_{i:03d}_0000.nii.gz") for i in (0, 3))
    path = tmp_path / "two_scans.nii.gz"
    write_image(path, np.concatenate([first.array, second.array], axis=1), first.geometry)
    return path


@pytest.fixture
def organ_decided(trained_model, tmp_path) -> Path:
    """The trained model with a decision that names the organ (training's own decision depends on its
    validation Dice, which a tiny model may or may not improve by post-processing)."""
    model = tmp_path / "organ_decided"
    shutil.copytree(trained_model, model)
    ModelDir(model).write_postprocessing({LARGEST_COMPONENT: {"organ": "set by the test"}, "decided_on": "test"})
    return model


def test_training_writes_the_decision_and_the_predictor_applies_it(trained_model, organ_decided, two_scans_in_one):
    decision = json.loads((trained_model / ModelDir.POSTPROCESSING).read_text())
    assert decision["decided_on"] == "validation"
    assert set(decision["largest_component"]) <= set(decision["candidates"]) <= {"organ", "lesion"}

    image = read_image(two_scans_in_one)
    plain, _ = Predictor([trained_model], largest_component=False).predict_image(image)
    assert _pieces(plain[0], 1) > 1 and _pieces(plain[0], 2) > 1  # there is something to post-process
    forced, _ = Predictor([trained_model], largest_component=True).predict_image(image)
    np.testing.assert_array_equal(forced[0], _largest_by_hand(plain[0], [1, 2]))
    assert _pieces(forced[0], 1) == _pieces(forced[0], 2) == 1

    names = {1: "organ", 2: "lesion"}
    classes = [k for k, name in names.items() if name in decision["largest_component"]]
    chosen, _ = Predictor([trained_model]).predict_image(image)
    np.testing.assert_array_equal(chosen[0], _largest_by_hand(plain[0], classes))

    # A decision naming the organ alone: its smaller pieces go, every lesion piece stays.
    organ_only, _ = Predictor([organ_decided]).predict_image(image)
    np.testing.assert_array_equal(organ_only[0], _largest_by_hand(plain[0], [1]))
    assert _pieces(organ_only[0], 1) == 1 and _pieces(organ_only[0], 2) == _pieces(plain[0], 2)


def test_no_postprocessing_flag(organ_decided, two_scans_in_one, tmp_path):
    args = ["predict", "-m", str(organ_decided), "-i", str(two_scans_in_one), "--no-progress", "-o"]
    assert main([*args, str(tmp_path / "plain"), "--no-postprocessing"]) == 0
    assert main([*args, str(tmp_path / "decided")]) == 0
    plain = read_image(tmp_path / "plain" / "two_scans.nii.gz").array[0]
    decided = read_image(tmp_path / "decided" / "two_scans.nii.gz").array[0]
    expected, _ = Predictor([organ_decided], largest_component=False).predict_image(read_image(two_scans_in_one))
    np.testing.assert_array_equal(plain, expected[0])
    assert _pieces(plain, 1) > 1  # without the flag the decision changes the mask:
    np.testing.assert_array_equal(decided, _largest_by_hand(plain, [1]))
