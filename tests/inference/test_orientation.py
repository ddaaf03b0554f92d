"""A model gives the same mask for a scan whatever voxel order the scan is stored in (issue 10): the
predictor works in RAS and puts every mask and probability map back in the scan's own order."""

import itertools
import json

import numpy as np

from attnseg.cli import main
from attnseg.data import read_image, write_image
from attnseg.data.geometry import Geometry
from attnseg.data.plan import plan_dataset
from attnseg.inference.predictor import Predictor
from tests.data.test_orientation import stored_as
from tests.fixtures import nnunet_builder, rotation

ORDERS = [
    (axes, flips) for axes in itertools.permutations(range(3)) for flips in itertools.product([False, True], repeat=3)
]


def _back_to_reference(array: np.ndarray, axes, flips) -> np.ndarray:
    """Undo stored_as on a (X, Y, Z) array: the stored order back to the reference order."""
    for k, flip in enumerate(flips):
        if flip:
            array = np.flip(array, k)
    return np.transpose(array, np.argsort(axes))


def test_same_mask_in_all_48_storage_orders_straight_and_oblique(trained_model, tiny_dataset):
    predictor = Predictor([trained_model])
    scan = read_image(tiny_dataset / "imagesTr" / "case_002_0000.nii.gz")  # an oblique grid
    straight = Geometry.create(scan.geometry.spacing, scan.geometry.origin)
    for geometry in (scan.geometry, straight):
        reference_mask, reference_probabilities = predictor.predict_image(type(scan)(scan.array, geometry, scan.path))
        for axes, flips in ORDERS:
            array, stored = stored_as(scan.array[0], geometry, axes, flips)
            mask, probabilities = predictor.predict_image(type(scan)(array[None], stored, scan.path))
            assert mask.shape[1:] == array.shape
            np.testing.assert_array_equal(_back_to_reference(mask[0], axes, flips), reference_mask[0])
            for k in range(probabilities.shape[0]):
                np.testing.assert_array_equal(
                    _back_to_reference(probabilities[k], axes, flips), reference_probabilities[k]
                )


def test_a_dataset_stored_in_mixed_orders_gets_the_same_plan(tmp_path):
    root = nnunet_builder(tmp_path)(cases=3, shape=(14, 12, 8), spacing=(0.7, 0.9, 2.0))
    plan = plan_dataset(root)
    assert plan.orientation == "RAS" and plan.slice_axis == 2  # axial: RAS axis 2 is the 2 mm one
    for i, (axes, flips) in enumerate([((2, 0, 1), (True, False, False)), ((1, 2, 0), (False, True, True))]):
        for folder, name in (("imagesTr", f"case_00{i}_0000.nii.gz"), ("labelsTr", f"case_00{i}.nii.gz")):
            image = read_image(root / folder / name)
            array, geometry = stored_as(image.array[0], image.geometry, axes, flips)
            write_image(root / folder / name, array[None], geometry, overwrite=True)
    again = plan_dataset(root)
    assert again.to_dict() == plan.to_dict()


def test_dataset_check_reports_orientations_without_warning(tmp_path, capsys):
    root = nnunet_builder(tmp_path)(cases=2, geometry=Geometry.create([1, 1, 2], [0, 0, 0], rotation([0, 0, 0])))
    image = read_image(root / "imagesTr" / "case_001_0000.nii.gz")
    label = read_image(root / "labelsTr" / "case_001.nii.gz")
    for thing, path in ((image, "imagesTr/case_001_0000.nii.gz"), (label, "labelsTr/case_001.nii.gz")):
        array, geometry = stored_as(thing.array[0], thing.geometry, (0, 2, 1), (False, False, True))  # LSA-like
        write_image(root / path, array[None], geometry, overwrite=True)
    assert main(["dataset", "check", str(root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["warnings"] == 0 and len(summary["orientations"]) == 2
