"""`attnseg visualize` on tiny trained models of both families, 2D and 3D: pictures, and NIfTI maps on the
scan's own grid that agree with a computation by hand."""

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from attnseg.cli import main
from attnseg.data import Plan, preprocess_case, read_image
from attnseg.inference.predictor import Predictor
from attnseg.model_dir import ModelDir
from attnseg.visualize.network_maps import to_input_size
from attnseg.visualize.scan import visualize_scan


def _scan(scans, case=1):
    return scans / "imagesTr" / f"case_{case:03d}_0000.nii.gz"


def _assert_on_the_scans_grid(volume_path, scan_path):
    volume, scan = nib.load(volume_path), nib.load(scan_path)
    assert volume.shape == scan.shape
    np.testing.assert_array_equal(volume.affine, scan.affine)


def test_attention_unet_2d_gates_by_hand(gates_2d, scans, tmp_path):
    scan = _scan(scans)
    result = visualize_scan(gates_2d, scan, tmp_path, nifti=True, count=2)
    assert result.family == "gates"
    assert result.maps == ["gate level2 head1", "gate level2 head2"]
    assert result.view == "axial" and result.axis == 2 and len(result.slices) == 2
    assert [p.name for p in result.figures] == ["case_001_attention.png"]
    names = sorted(p.name for p in result.volumes)
    assert names == [
        "case_001_gate_level2_head1.nii.gz",
        "case_001_gate_level2_head2.nii.gz",
        "case_001_prediction.nii.gz",
    ]
    for path in result.volumes:
        _assert_on_the_scans_grid(path, scan)

    # the mask is the one `attnseg predict` writes
    mask, _ = Predictor([gates_2d]).predict_image(read_image(scan))
    np.testing.assert_array_equal(nib.load(tmp_path / "case_001_prediction.nii.gz").get_fdata(), mask[0])
    # the most-foreground slices of that mask were chosen
    counts = np.count_nonzero(mask[0], axis=(0, 1))
    assert min(counts[result.slices]) >= sorted(counts)[-3]

    # α by hand: the network on every preprocessed slice, pasted into the crop (this plan does not resample)
    model = ModelDir(gates_2d)
    plan = Plan.from_dict(model.plan())
    network = model.build_network()
    case = preprocess_case(read_image(scan), plan)
    assert case.properties.resampled_shape == case.properties.cropped_shape
    expected = np.zeros(case.properties.shape, np.float32)
    crop = tuple(slice(a, b) for a, b in case.properties.bbox)
    with torch.no_grad():
        slices = torch.from_numpy(np.moveaxis(case.image, plan.slice_axis + 1, 0).copy())  # (N, C, H, W)
        alpha = network(slices, return_attention=True).attention["level2"][:, 1:2]
        alpha = to_input_size(alpha, slices.shape[2:])[:, 0].numpy()
    expected[crop] = np.moveaxis(alpha, 0, plan.slice_axis)
    expected = case.properties.to_stored_order(expected[None])[0]  # the plan works in RAS; the file is stored
    written = nib.load(tmp_path / "case_001_gate_level2_head2.nii.gz").get_fdata()
    np.testing.assert_allclose(written, expected, atol=1e-5)

    with PILImage.open(result.figures[0]) as picture:
        assert picture.height > 300  # a row per slice


def test_attention_unet_3d_by_sliding_window(gates_3d, scans, tmp_path):
    scan = _scan(scans, 2)
    result = visualize_scan(gates_3d, scan, tmp_path, nifti=True, slices=[1, 4])
    assert result.slices == [1, 4]
    assert len(result.volumes) == 3
    for path in result.volumes:
        _assert_on_the_scans_grid(path, scan)
    alpha = nib.load(tmp_path / "case_002_gate_level2_head1.nii.gz").get_fdata()
    assert alpha.min() >= 0 and alpha.max() <= 1 and alpha.max() > 0


def test_guided_network_draws_every_scale_and_step(guided_2d, scans, tmp_path):
    scan = _scan(scans)
    result = visualize_scan(guided_2d, scan, tmp_path, nifti=True, count=2)
    assert result.family == "guided"
    assert len(result.maps) == 2 * 4 * 3  # steps x scales x (position, channel, combined)
    assert [p.name for p in result.figures] == [f"case_001_attention_slice{i:03d}.png" for i in result.slices]
    assert len(result.volumes) == 24 + 5  # the maps, four scale predictions and their average
    for path in result.volumes:
        _assert_on_the_scans_grid(path, scan)
    for scale in range(1, 5):
        labels = nib.load(tmp_path / f"case_001_scale{scale}_prediction.nii.gz").get_fdata()
        assert set(np.unique(labels)) <= {0, 1, 2}
    position = nib.load(tmp_path / "case_001_step2_scale1_position.nii.gz").get_fdata()
    assert position.min() >= 0 and position.max() > 0  # root mean square of the branch's features


def test_cli_refuses_bad_requests_in_one_line(gates_2d, plain_unet, scans, tmp_path, capsys):
    scan = str(_scan(scans))
    out = str(tmp_path / "out")
    assert main(["visualize", "-m", str(gates_2d), "-i", scan, "-o", out, "--slices", "2", "4"]) == 0
    printed = capsys.readouterr().out
    assert "2 attention map(s) of case_001 on axial slices [2, 4]" in printed
    assert main(["visualize", "-m", str(gates_2d), "-i", scan, "-o", out]) == 2
    assert "case_001_attention.png exists; pass overwrite=True" in capsys.readouterr().err
    assert main(["visualize", "-m", str(gates_2d), "-i", scan, "-o", out, "--slices", "6", "--overwrite"]) == 2
    assert "slice 6 is outside 0..5 along voxel axis 2" in capsys.readouterr().err
    assert main(["visualize", "-m", str(plain_unet), "-i", scan, "-o", out]) == 2
    assert "network 'unet' has no attention maps" in capsys.readouterr().err


@pytest.mark.parametrize("axis", [0, 1])
def test_other_axes_cut_other_views(gates_2d, scans, tmp_path, axis):
    result = visualize_scan(gates_2d, _scan(scans), tmp_path, axis=axis, count=1)
    assert result.axis == axis
    assert result.view in ("coronal", "sagittal")
