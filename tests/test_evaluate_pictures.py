"""Distances measured on 2-D pictures that store no pixel size (PNG and TIFF saved by Pillow, as cameras,
editors and annotation tools save them) are pixels, and every report says so (attnseg.data.pixel_size)."""

import csv
import json

import numpy as np
import pytest
from PIL import Image as Picture

from attnseg.cli import main
from attnseg.data import write_image
from attnseg.data.check import check_dataset
from attnseg.data.geometry import Geometry
from attnseg.visualize.report import write_report


def _square(left: int) -> np.ndarray:
    """A 20 x 30 picture (rows x columns) holding a 10 x 10 square whose left column is ``left``."""
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, left : left + 10] = 1
    return mask


def _folders(tmp_path, ending=".png", **save):
    """PRED and GT folders of one case: the predicted square 3 pixels right of the reference's, so that
    HD95 is 3 pixels (every point of the left and right edges is 3 pixels from the other mask's edge)."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for folder, left in ((pred, 8), (ref, 5)):
        folder.mkdir()
        Picture.fromarray(_square(left)).save(folder / f"case{ending}", **save)
    return pred, ref


def _evaluate(pred, ref, out, *options) -> int:
    return main(["evaluate", str(pred), str(ref), "-o", str(out), "--no-progress", *options])


@pytest.mark.parametrize(("ending", "save"), [(".png", {}), (".tif", {"dpi": (300, 300)})])
def test_distances_of_pictures_are_reported_in_pixels_everywhere(tmp_path, capsys, ending, save):
    pred, ref = _folders(tmp_path, ending, **save)  # the TIFF's 300 dpi is a print size, not 0.0847 mm
    out = tmp_path / "out"
    assert _evaluate(pred, ref, out) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distance_unit"] == "px"
    assert summary["nsd_tolerance_px"] == 1.0 and "nsd_tolerance_mm" not in summary
    assert summary["mean"]["1"]["HD95"] == pytest.approx(3.0)
    assert summary["mean"]["1"]["volume_ref_px"] == 100 and "volume_ref_mm3" not in summary["mean"]["1"]
    assert summary["metric_per_case"][0]["spacing"] == [1.0, 1.0]
    with open(out / "cases.csv") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["HD95_px"]) == pytest.approx(3.0) and "HD95" not in row
    assert not [column for column in row if "mm" in column]
    table = (out / "summary.md").read_text()
    for text in (table, printed):
        assert "HD95 (px)" in text and "ASSD (px)" in text and "NSD@1px" in text and "offset (px)" in text
        assert "mm" not in text.split("\n\n")[0]  # the table itself
    assert "store no pixel size" in table
    page = write_report(out).read_text()
    assert "HD95 (px)" in page and "NSD@1px" in page and "HD95 (mm)" not in page


def test_a_stated_pixel_size_gives_mm(tmp_path):
    pred, ref = _folders(tmp_path)
    out = tmp_path / "out"
    assert _evaluate(pred, ref, out, "--pixel-size", "0.5", "--nsd-tolerance", "1.5") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distance_unit"] == "mm" and summary["nsd_tolerance_mm"] == 1.5
    assert summary["mean"]["1"]["HD95"] == pytest.approx(1.5)  # 3 pixels of 0.5 mm
    assert summary["mean"]["1"]["NSD"] == pytest.approx(1.0)
    assert "HD95 (mm)" in (out / "summary.md").read_text()
    assert _evaluate(pred, ref, tmp_path / "bad", "--pixel-size", "0", "--nsd-tolerance", "1") == 2


def test_a_folder_mixing_pictures_and_scans_is_refused_naming_both(tmp_path, capsys):
    pred, ref = _folders(tmp_path)
    for folder, left in ((pred, 8), (ref, 5)):
        write_image(folder / "scan.nii.gz", _square(left).T[None], Geometry.create([0.7, 0.7]))
    assert _evaluate(pred, ref, tmp_path / "out") == 1
    error = capsys.readouterr().err
    assert "mix distance units: 1 in px (case); 1 in mm (scan)" in error
    assert not (tmp_path / "out").exists()


def test_an_mm_evaluation_says_mm(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for folder, left in ((pred, 8), (ref, 5)):
        write_image(folder / "case.png", _square(left).T[None], Geometry.create([0.5, 0.5]))  # sCAL: stored
    assert _evaluate(pred, ref, tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["distance_unit"] == "mm" and summary["nsd_tolerance_mm"] == 1.0
    assert summary["mean"]["1"]["HD95"] == pytest.approx(1.5)


@pytest.mark.parametrize(("ending", "save"), [(".png", {}), (".tif", {"dpi": (300, 300)})])
def test_dataset_check_says_the_spacing_of_pictures_is_not_stored(tmp_path, ending, save):
    root = tmp_path / "ds"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    Picture.fromarray(_square(5) * 100).save(root / "imagesTr" / f"a_0000{ending}", **save)
    Picture.fromarray(_square(5)).save(root / "labelsTr" / f"a{ending}", **save)
    spec = {"channel_names": {"0": "US"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(spec))
    report = check_dataset(root)
    assert report.errors == []
    assert "spacing: not stored (pixels)" in report.format()
    assert "spacing (mm" not in report.format()
    assert report.summary()["spacing"]["median"] == [1.0, 1.0]  # not 0.0847 mm from 300 dpi
