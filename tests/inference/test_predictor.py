import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from scipy import ndimage

from attnseg.cli import main
from attnseg.data import preprocess_case, read_image, restore_probabilities, write_image
from attnseg.data.geometry import Geometry
from attnseg.errors import ConfigError, DataError, OutputExistsError
from attnseg.inference.postprocess import keep_largest_components
from attnseg.inference.predictor import Predictor
from attnseg.model_dir import ModelDir
from tests.fixtures import oblique_geometry, rotation, synthetic_case, write_dicom_series


def _assert_on_grid(mask_path, image_path):
    mask, image = read_image(mask_path), read_image(image_path)
    assert mask.spatial_shape == image.spatial_shape
    assert mask.geometry.allclose(image.geometry, atol=1e-6), mask.geometry.differences(image.geometry)
    return mask


def test_masks_keep_the_input_geometry_exactly(trained_model, tiny_dataset, tmp_path):
    image = tiny_dataset / "imagesTr" / "case_000_0000.nii.gz"
    written = Predictor([trained_model]).predict_files(image, tmp_path / "out", progress=False)
    assert [p.name for p in written] == ["case_000.nii.gz"]
    mask = _assert_on_grid(written[0], image)
    assert set(np.unique(mask.array)) <= {0, 1, 2}


def test_nrrd_input_with_another_oblique_grid_and_spacing(trained_model, tmp_path):
    """A scan on a grid the model never saw: different size, spacing and direction, full float64 origin."""
    geometry = Geometry.create([0.55, 1.9, 3.1], [12.987654321, -40.5, 7.25], rotation([-0.4, 0.2, 0.9]))
    scan = tmp_path / "scan.nrrd"
    write_image(scan, (100 + 20 * np.random.default_rng(1).random((1, 23, 11, 7))).astype(np.float32), geometry)
    written = Predictor([trained_model]).predict_files(scan, tmp_path / "out", progress=False)
    assert written[0].name == "scan.nrrd"
    _assert_on_grid(written[0], scan)


def _perturbed_copy(model: Path, target: Path) -> Path:
    """A second member for an ensemble: the model directory with every weight moved by seeded noise, so
    its probabilities differ clearly from the original's."""
    shutil.copytree(model, target)
    directory = ModelDir(target)
    network = directory.build_network(weights=True)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in network.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(0.5 * noise * parameter.abs().mean().clamp_min(1e-2))
    directory.save_weights(network)
    return target


FLIPS_2D = [(), (2,), (3,), (2, 3)]  # every subset of a slice's two axes (a (B, C, H, W) batch)


def _by_hand(model_dirs: list[Path], image, flips, flip_back: bool = True) -> np.ndarray:
    """What Predictor(model_dirs, mirror=...) must give, written out: for each member, on the plan's grid,
    slice by slice, the softmax of the logits of every flipped copy of the slice, flipped back, averaged
    over the flips, calibrated by the member's temperature (softmax(log p / T)); then the mean over the members,
    and back to the image's grid. (``flip_back=False``: the mistake of averaging the flipped copies as they
    come.)"""
    members = []
    for path in model_dirs:
        directory = ModelDir(path)
        plan, network = directory.load_plan(), directory.build_network(weights=True)
        case = preprocess_case(image, plan)
        slices = torch.from_numpy(np.array(case.image)).movedim(plan.slice_axis + 1, 0)  # (N, C, H, W)
        with torch.no_grad():
            per_flip = [torch.softmax(network(slices.flip(axes)), dim=1) for axes in flips]
        if flip_back:
            per_flip = [probabilities.flip(axes) for probabilities, axes in zip(per_flip, flips, strict=True)]
        mean = sum(per_flip) / len(flips)
        calibrated = torch.softmax(torch.log(mean.clamp_min(1e-7)) / directory.temperature(), dim=1)
        members.append(calibrated.movedim(0, plan.slice_axis + 1))
    return restore_probabilities(sum(members) / len(members), case.properties)


def _asymmetric_scan(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A training scan with a bright block in one corner: no flip maps it onto itself."""
    scan = read_image(tiny_dataset / "imagesTr" / "case_001_0000.nii.gz")
    array = scan.array.copy()
    array[0, :7, :5, :] = 2.5 * scan.array.max()
    image = tmp_path / "asymmetric.nii.gz"
    write_image(image, array, scan.geometry)
    return image


def test_tta_ensemble_probabilities_and_largest_component(trained_model, tiny_dataset, tmp_path):
    """Mirroring flips every copy back before averaging, and the ensemble averages every member's
    probabilities: checked against the hand computation, on an input that is not mirror-symmetric, with
    two members whose predictions differ (a TTA that forgets to flip back, or an ensemble that uses its
    first member only, fails here)."""
    image = _asymmetric_scan(tiny_dataset, tmp_path)
    other = _perturbed_copy(trained_model, tmp_path / "other")
    # amp="off": fp32 as the hand computation (the training may have chosen bf16, from its timings)
    predictor = Predictor([trained_model, other], mirror=True, largest_component=True, amp="off")
    written = predictor.predict_files(image, tmp_path / "out", save_probabilities=True, progress=False)
    probabilities = read_image(tmp_path / "out" / "asymmetric_probabilities.nii.gz")
    assert probabilities.channels == 3
    np.testing.assert_allclose(probabilities.array.sum(0), 1.0, atol=1e-5)

    scan = read_image(image)
    expected = _by_hand([trained_model, other], scan, FLIPS_2D)
    np.testing.assert_allclose(probabilities.array, expected, atol=2e-5)
    # The case can tell the wrong computations apart: each differs from the right one by far more than
    # the tolerance.
    first_member_only = _by_hand([trained_model], scan, FLIPS_2D)
    without_mirroring = _by_hand([trained_model, other], scan, [()])
    assert np.abs(first_member_only - expected).max() > 0.05
    assert np.abs(without_mirroring - expected).max() > 0.05
    not_flipped_back = _by_hand([trained_model, other], scan, FLIPS_2D, flip_back=False)
    assert np.abs(not_flipped_back - expected).max() > 0.05

    mask = _assert_on_grid(written[0], image)
    for value in (1, 2):
        assert ndimage.label(mask.array[0] == value)[1] <= 1  # one component per class at most


def test_the_mask_without_probabilities_is_the_same(trained_model, tiny_dataset, tmp_path):
    """With no probabilities to write and quality control off, an ensemble's mask is made one class at a
    time, without the probabilities: the same mask, byte for byte, as from the whole volume."""
    other = _perturbed_copy(trained_model, tmp_path / "other")
    predictor = Predictor([trained_model, other], quality_control=False, amp="off")
    prepared = predictor.prepare(read_image(_asymmetric_scan(tiny_dataset, tmp_path)))
    means = predictor.forward(prepared)
    mask, probabilities = predictor.finish(prepared, means)
    lean, none = predictor.finish(prepared, means, probabilities=False)
    assert none is None and probabilities is not None
    assert lean.dtype == mask.dtype and lean.tobytes() == mask.tobytes()
    predictor.quality_control = True  # quality control reads them: kept
    assert predictor.finish(prepared, means, probabilities=False)[1] is not None


def _copies_by_hand(model_dirs: list[Path], image, flips) -> list[np.ndarray]:
    """Every mirrored copy's mask of every member, by hand: on the plan's grid, slice by slice, the argmax
    of the softmax of the flipped slices' logits, flipped back."""
    masks = []
    for path in model_dirs:
        directory = ModelDir(path)
        plan, network = directory.load_plan(), directory.build_network(weights=True)
        slices = torch.from_numpy(np.array(preprocess_case(image, plan).image)).movedim(plan.slice_axis + 1, 0)
        with torch.no_grad():
            masks += [torch.softmax(network(slices.flip(axes)), dim=1).flip(axes).argmax(1).numpy() for axes in flips]
    return masks


def _pooled_mutual_dice(masks: list[np.ndarray], num_classes: int) -> float:
    """Per foreground class, 2 sum |A & B| / sum (|A| + |B|) over every pair of masks; the mean over classes."""
    per_class = []
    for k in range(1, num_classes):
        pairs = [(a == k, b == k) for i, a in enumerate(masks) for b in masks[i + 1 :]]
        overlap = sum(2 * int((a & b).sum()) for a, b in pairs)
        per_class.append(overlap / sum(int(a.sum()) + int(b.sum()) for a, b in pairs))
    return float(np.mean(per_class))


def test_qc_measures_the_disagreement_of_every_mirrored_copy_of_every_member(trained_model, tiny_dataset, tmp_path):
    """With TTA and an ensemble, quality control bounds the predicted Dice by the mutual Dice of every
    mirrored copy of every member, pooled over their pairs: checked by hand on an input no flip maps
    onto itself, with two members whose predictions differ (the members' averaged masks alone, or the
    first member's copies alone, give another figure)."""
    image = _asymmetric_scan(tiny_dataset, tmp_path)
    other = _perturbed_copy(trained_model, tmp_path / "other")
    predictor = Predictor([trained_model, other], mirror=True, amp="off")
    predictor.predict_files(image, tmp_path / "out", progress=False)
    case = json.loads((tmp_path / "out" / "qc.json").read_text())["cases"][0]

    scan = read_image(image)
    copies = _copies_by_hand([trained_model, other], scan, FLIPS_2D)
    assert len(copies) == 8
    expected = _pooled_mutual_dice(copies, 3)
    assert case["measures"]["mutual_dice"] == pytest.approx(expected, abs=1e-3)
    assert case["predicted_dice"] <= case["measures"]["mutual_dice"] + 1e-9  # the bound applies
    first_member_only = _pooled_mutual_dice(copies[:4], 3)
    members_only = _pooled_mutual_dice(
        [_by_hand([path], scan, FLIPS_2D).argmax(0) for path in (trained_model, other)], 3
    )
    assert abs(first_member_only - expected) > 0.01 and abs(members_only - expected) > 0.01


def test_keep_largest_components():
    classes = np.zeros((6, 6), dtype=np.int64)
    classes[0:2, 0:2] = 1  # 4 voxels
    classes[4:6, 3:6] = 1  # 6 voxels: kept
    classes[3, 0] = 2  # a single 2 stays
    kept = keep_largest_components(classes, [1, 2])
    expected = classes.copy()
    expected[0:2, 0:2] = 0
    np.testing.assert_array_equal(kept, expected)


def test_single_model_equals_its_own_two_model_ensemble(trained_model, tiny_dataset):
    image = read_image(tiny_dataset / "imagesTr" / "case_002_0000.nii.gz")
    one_mask, one_prob = Predictor([trained_model]).predict_image(image)
    two_mask, two_prob = Predictor([trained_model, trained_model]).predict_image(image)
    np.testing.assert_allclose(one_prob, two_prob, atol=1e-6)
    np.testing.assert_array_equal(one_mask, two_mask)


def test_existing_masks_are_kept_unless_overwrite(trained_model, tiny_dataset, tmp_path):
    image = tiny_dataset / "imagesTr" / "case_000_0000.nii.gz"
    out = tmp_path / "out"
    Predictor([trained_model]).predict_files(image, out, progress=False)
    before = (out / "case_000.nii.gz").read_bytes()
    with pytest.raises(OutputExistsError, match=r"case_000\.nii\.gz exists"):
        Predictor([trained_model]).predict_files(image, out, progress=False)
    assert (out / "case_000.nii.gz").read_bytes() == before
    Predictor([trained_model]).predict_files(image, out, overwrite=True, progress=False)


def test_predict_cli_on_a_folder(trained_model, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", "-m", str(trained_model), "-i", str(tiny_dataset / "imagesTr"), "-o", str(out), "--no-progress"]
    assert main(args) == 0
    assert "wrote 5 mask(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [*(f"case_{i:03d}.nii.gz" for i in range(5)), "qc.csv", "qc.json"]
    assert main(args) == 2  # refuses to overwrite
    assert "exists; pass overwrite=True" in capsys.readouterr().err


def test_wrong_channel_count_is_a_clear_error(trained_model, tmp_path):
    scan = tmp_path / "two.nii.gz"
    write_image(scan, np.zeros((2, 8, 8, 4), np.float32), Geometry.identity(3))
    with pytest.raises(DataError, match=r"two.nii.gz: 2 channel\(s\), but the model expects 1"):
        Predictor([trained_model]).predict_image(read_image(scan))


def _study_uid(folder):
    return {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in folder.iterdir()}


def test_dicom_series_input_gives_nrrd_or_a_dicom_series_in_its_study(trained_model, tmp_path, capsys):
    """A DICOM scan on the training grid: the default mask is .nrrd; --format dicom writes a series that
    reads back on the scan's grid and joins the scan's study."""
    image, _ = synthetic_case((20, 18, 6), np.random.default_rng(3))
    write_dicom_series(tmp_path / "series1", image.astype(np.int16), oblique_geometry())
    scan = read_image(tmp_path / "series1")
    written = Predictor([trained_model]).predict_files(tmp_path / "series1", tmp_path / "nrrd", progress=False)
    assert [p.name for p in written] == ["series1.nrrd"]
    nrrd = _assert_on_grid(written[0], scan.path)

    args = ["predict", "-m", str(trained_model), "-i", str(scan.path), "-o", str(tmp_path / "dcm"), "--no-progress"]
    assert main([*args, "--format", "dicom", "--probabilities"]) == 0
    assert sorted(p.name for p in (tmp_path / "dcm").iterdir()) == [
        "qc.csv",
        "qc.json",
        "series1",
        "series1_probabilities.nrrd",
    ]
    series = _assert_on_grid(tmp_path / "dcm" / "series1", scan.path)
    np.testing.assert_array_equal(series.array, nrrd.array)
    assert _study_uid(tmp_path / "dcm" / "series1") == _study_uid(scan.path)
    assert series.meta["dicom"]["FrameOfReferenceUID"] == scan.meta["dicom"]["FrameOfReferenceUID"]
    assert series.meta["series_description"].startswith("attnseg mask (")
    capsys.readouterr()
    assert main([*args, "--format", "dicom"]) == 2  # refuses to overwrite the series
    assert "series1 exists; pass overwrite=True" in capsys.readouterr().err
    assert main([*args, "--format", "dicom", "--overwrite"]) == 0
    nifti = tmp_path / "scan.nii.gz"
    write_image(nifti, scan.array, scan.geometry)
    with pytest.raises(ConfigError, match=r"scan.nii.gz: output format 'dicom' writes masks for DICOM series inputs"):
        Predictor([trained_model]).predict_files(nifti, tmp_path / "x", output_ending="dicom", progress=False)
    with pytest.raises(ConfigError, match=r"series1: the mask series would replace its own input"):
        Predictor([trained_model]).predict_files(scan.path, tmp_path, output_ending="dicom", overwrite=True)
    assert _study_uid(scan.path) == {scan.meta["dicom"]["StudyInstanceUID"]}  # the scan is untouched


def test_prediction_runs_as_the_training_chose_unless_told_otherwise(trained_model, tiny_dataset, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    assert json.loads((model / ModelDir.RUNTIME).read_text())["device"] == "cpu"  # written by attnseg train
    (model / ModelDir.RUNTIME).write_text(json.dumps({"device": "cpu", "layout": "contiguous", "amp": "bf16"}))
    image = read_image(tiny_dataset / "imagesTr" / "case_002_0000.nii.gz")

    followed = Predictor([model])
    (loaded,) = followed.models
    assert loaded.runtime.name == "contiguous/bf16" and "as the training chose" in loaded.runtime.reason
    assert all(p.is_contiguous() for p in loaded.network.parameters())
    full = Predictor([model], amp="off")
    assert full.models[0].runtime.name == "contiguous/fp32"
    (mask_bf16, prob_bf16), (mask_fp32, prob_fp32) = followed.predict_image(image), full.predict_image(image)
    np.testing.assert_allclose(prob_bf16, prob_fp32, atol=0.05)  # bf16 keeps ~3 significant digits
    assert np.mean(mask_bf16 == mask_fp32) > 0.98
    (model / ModelDir.RUNTIME).unlink()  # a model directory from before runtime.json: the default
    assert Predictor([model]).models[0].runtime.name == "channels_last/fp32"


def test_predict_refuses_scans_whose_dataset_json_orders_the_channels_otherwise(
    trained_model, tiny_dataset, tmp_path, capsys
):
    """The model learnt channel 0 as "MR"; scans whose dataset.json says _0000 holds "CT" would be fed to it as
    MR with no error. predict and visualize refuse them, naming the file and both orders; a dataset.json that
    agrees (any case) is accepted."""
    scans = tmp_path / "Dataset009_Other"
    shutil.copytree(tiny_dataset / "imagesTr", scans / "imagesTs")
    spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0}, "file_ending": ".nii.gz"}
    (scans / "dataset.json").write_text(json.dumps(spec))
    args = [
        "predict",
        "-m",
        str(trained_model),
        "-i",
        str(scans / "imagesTs"),
        "-o",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(args) == 2
    expected = (
        f"{scans / 'dataset.json'}: the scans' channels are _0000=CT, but the model was trained on _0000=MR; "
        "each CASE_000k file is read as the model's channel k"
    )
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.nii.gz"))
    scan = scans / "imagesTs" / "case_000_0000.nii.gz"
    assert main(["visualize", "-m", str(trained_model), "-i", str(scan), "-o", str(tmp_path / "vis")]) == 2
    assert expected in capsys.readouterr().err

    spec["channel_names"] = {"0": "mr"}
    (scans / "dataset.json").write_text(json.dumps(spec))
    assert main(args) == 0


def test_a_one_channel_model_is_not_held_to_its_channel_name(tmp_path):
    """One channel has no order to get wrong: "T1w" beside the scans of a model trained on "T1" is no error;
    an MR scan for a CT model is."""
    import json

    from attnseg.inference.cases import check_channel_names

    (tmp_path / "imagesTs").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1w"}, "labels": {"background": 0}}))
    check_channel_names([tmp_path / "imagesTs"], ["T1"])  # no error
    with pytest.raises(DataError, match="the scans' channels are _0000=T1w, but the model was trained on _0000=CT"):
        check_channel_names([tmp_path / "imagesTs"], ["CT"])  # normalised on another scale
    with pytest.raises(DataError, match="the scans' channels are _0000=T1w, _0001=T2"):
        (tmp_path / "dataset.json").write_text(
            json.dumps({"channel_names": {"0": "T1w", "1": "T2"}, "labels": {"background": 0}})
        )
        check_channel_names([tmp_path / "imagesTs"], ["T1", "T2"])
