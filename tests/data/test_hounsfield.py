"""CT channels not in Hounsfield units (the rescale intercept applied twice) are named by dataset check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.data.geometry import Geometry
from attnseg.data.hounsfield import hounsfield_problem
from attnseg.data.io import write_image


def _chest(shape=(48, 40, 12), padding: float = -3024.0, body_radius: float = 0.8) -> np.ndarray:
    """Air (-1000) around an elliptic body of soft tissue (40), two lungs (-850) and a spine (700), with the
    scanner's padding outside a circular field of view; noise of 10 HU."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    scan = np.full(shape[:2], -1000.0)
    body = (x / body_radius) ** 2 + (y / (0.7 * body_radius)) ** 2 < 1
    scan[body] = 40.0
    scan[body & (((x - 0.35 * body_radius) / 0.25) ** 2 + (y / 0.3) ** 2 < 1 * body_radius)] = -850.0
    scan[body & (((x + 0.35 * body_radius) / 0.25) ** 2 + (y / 0.3) ** 2 < 1 * body_radius)] = -850.0
    scan[body & (x**2 + (y + 0.4 * body_radius) ** 2 < 0.01)] = 700.0
    volume = np.repeat(scan[:, :, None], shape[2], axis=2) + rng.normal(0, 10, shape)
    volume[x**2 + y**2 > 1] = padding
    return volume.astype(np.float32)


def test_a_scan_in_hounsfield_units_passes_and_one_shifted_by_an_intercept_does_not():
    assert hounsfield_problem(_chest()) is None
    assert hounsfield_problem(_chest(padding=-2048.0)) is None  # Siemens-like padding: the air is at -1000
    shifted = _chest() - 1024.0  # stored in HU, then the intercept of -1024 applied again
    shifted[_chest() == -3024.0] = -3024.0  # the padding value as the scanner wrote it
    problem = hounsfield_problem(shifted)
    assert problem is not None and "air peaks at about -2012" in problem  # the 25 HU bin holding -2024
    assert "shifted by about -1012 HU" in problem and "intercept applied twice" in problem


def test_a_small_body_part_in_a_large_field_of_view_is_not_flagged():
    wrist = _chest(body_radius=0.12)  # under 2% soft tissue, but its air is at -1000
    soft = np.count_nonzero((wrist >= -150) & (wrist <= 250)) / np.count_nonzero(wrist != -3024)
    assert soft < 0.02
    assert hounsfield_problem(wrist) is None


def test_dataset_check_names_the_shifted_ct(tmp_path, capsys):
    root = tmp_path / "Dataset001_Chest"
    geometry = Geometry.create([0.8, 0.8, 2.5])
    for i, scan in enumerate((_chest(), _chest() - 1024.0)):
        write_image(root / "imagesTr" / f"chest_{i}_0000.nii.gz", scan[None], geometry)
        write_image(root / "labelsTr" / f"chest_{i}.nii.gz", (scan[None] > -900).astype(np.uint8), geometry)
    spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "body": 1}, "numTraining": 2}
    (root / "dataset.json").write_text(json.dumps({**spec, "file_ending": ".nii.gz"}))
    assert main(["dataset", "check", str(root)]) == 0  # a warning: training would run
    out = capsys.readouterr().out
    assert "chest_1_0000.nii.gz" in out and "CT values are not Hounsfield units" in out
    assert "chest_0_0000.nii.gz" not in out.split("problems")[-1]


@pytest.mark.parametrize("name", ["CT", " ct "])
def test_the_ct_name_rule_is_the_normalisations(name):
    from attnseg.data.plan import scheme_for_channel

    assert scheme_for_channel(name) == "ct"
