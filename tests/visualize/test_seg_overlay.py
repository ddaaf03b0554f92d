"""A SEG drawn over its source series from the files alone: the picture is written (atomically, kept unless
overwrite), and a SEG that does not lie on the series' grid is refused rather than drawn misplaced."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from attnseg.data.dicom import read_dicom_series
from attnseg.data.dicom_seg import Algorithm, EmptySegmentWarning, write_seg
from attnseg.errors import DataError, OutputExistsError
from attnseg.visualize.drawing import class_colour
from attnseg.visualize.seg_overlay import save_seg_overlay
from tests.dicom_series import write_case


def test_seg_drawn_over_its_series_and_refused_over_another(tmp_path):
    series, other = write_case(tmp_path / "oblique", "oblique"), write_case(tmp_path / "axial", "axial")
    image = read_dicom_series(series)
    mask = np.zeros((1, *image.spatial_shape), np.uint8)
    mask[0, 4:12, 5:13, :] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptySegmentWarning)
        seg = write_seg(
            tmp_path / "case.seg.dcm", mask, image, {"background": 0, "liver": 1}, Algorithm("a", "1", "m", ())
        )
    picture = save_seg_overlay(seg.path, series, tmp_path / "overlay.png", count=2)
    pixels = np.asarray(Image.open(picture).convert("RGB")).reshape(-1, 3).astype(int)
    liver = np.round(np.asarray(class_colour(1)) * 255)
    assert np.any(np.abs(pixels - liver).max(axis=1) <= 2)  # the segment's outline in its colour
    with pytest.raises(OutputExistsError):
        save_seg_overlay(seg.path, series, picture)
    with pytest.raises(DataError, match=r"case\.seg\.dcm: the SEG's frames do not lie on the scan's grid"):
        save_seg_overlay(seg.path, other, tmp_path / "wrong.png")
    assert not (tmp_path / "wrong.png").exists()
