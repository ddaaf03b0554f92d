"""`attnseg predict --output-format dicom-seg` on a tree of every series layout: one SEG per series, each
equal in physical space to predict's NIfTI mask of the same series, each passing dciodvfy."""

from __future__ import annotations

import warnings

import pydicom

from attnseg.cli import main
from attnseg.data.dicom_seg import EmptySegmentWarning
from attnseg.model_dir import ModelDir
from tests.data.test_dicom_seg import assert_seg_equals_nifti, assert_valid
from tests.dicom_series import GEOMETRY_CASES, write_case


def test_predict_writes_one_seg_per_series_equal_to_the_nifti_masks(trained_model, tmp_path, capsys):
    tree = tmp_path / "export"
    for kind in GEOMETRY_CASES:
        write_case(tree / "patient" / kind, kind)
    common = ["predict", "-m", str(trained_model), "-i", str(tree), "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptySegmentWarning)
        assert main([*common, "-o", str(tmp_path / "seg"), "--output-format", "dicom-seg"]) == 0
    assert main([*common, "-o", str(tmp_path / "nifti"), "--format", ".nii.gz"]) == 0
    labels = ModelDir(trained_model).labels()
    segs = sorted((tmp_path / "seg").iterdir())
    assert [p.name for p in segs] == sorted(f"patient_{kind}.seg.dcm" for kind in GEOMETRY_CASES)
    sha = ModelDir(trained_model).weights_sha256()
    for seg in segs:
        assert_seg_equals_nifti(seg, tmp_path / "nifti" / seg.name.replace(".seg.dcm", ".nii.gz"), labels)
        assert_valid(seg)
        header = pydicom.dcmread(seg, stop_before_pixels=True)
        assert sha in header.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
