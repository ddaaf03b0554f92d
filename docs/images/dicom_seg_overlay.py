"""The picture in docs/dicom.md: a synthetic CT-like series, a SEG written by attnseg, drawn from the files."""

import sys
import warnings
from pathlib import Path

import numpy as np

from attnseg.data.dicom import read_dicom_series
from attnseg.data.dicom_seg import Algorithm, write_seg
from attnseg.data.geometry import Geometry
from attnseg.visualize.seg_overlay import save_seg_overlay
from tests.fixtures import rotation, write_dicom_series

root = Path(sys.argv[1])
shape = (96, 96, 24)
g = np.indices(shape).astype(float)
c = (np.array(shape) - 1) / 2
body = (((g[0] - c[0]) / 44) ** 2 + ((g[1] - c[1]) / 36) ** 2) < 1
organ = (((g[0] - 35) / 20) ** 2 + ((g[1] - 45) / 16) ** 2 + ((g[2] - 12) / 10) ** 2) < 1
lesion = (((g[0] - 30) / 5) ** 2 + ((g[1] - 42) / 5) ** 2 + ((g[2] - 11) / 3) ** 2) < 1
rng = np.random.default_rng(0)
volume = np.where(body, 40, -1000) + np.where(organ, 60, 0) - np.where(lesion, 50, 0) + rng.normal(0, 12, shape)
geometry = Geometry.create([0.8, 0.8, 3.0], [-40.0, -40.0, 10.0], rotation([0.0, 0.0, 0.2]))
write_dicom_series(root / "series", volume.astype(np.int16), geometry)
image = read_dicom_series(root / "series")
mask = np.zeros(shape, np.uint8)
mask[organ] = 1
mask[lesion] = 2
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    write_seg(
        root / "case.seg.dcm",
        mask[None],
        image,
        {"background": 0, "liver": 1, "lesion": 2},
        Algorithm("attnseg", "docs", "synthetic", ("0" * 64,)),
        overwrite=True,
    )
print(save_seg_overlay(root / "case.seg.dcm", root / "series", sys.argv[2], overwrite=True))
