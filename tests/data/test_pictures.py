"""2-D pictures as users save them (PNG, TIFF written with Pillow, not with attnseg): palette masks, masks
saved as 0/255, colour masks, colour images where one channel is expected, and one colour picture per case
(nnU-Net's natural-image layout) beside its three grey files."""

import json

import numpy as np
import pytest
from PIL import Image as Picture

from attnseg.cli import main
from attnseg.data.check import check_dataset
from attnseg.data.dataset import load_dataset
from attnseg.data.io import read_case, read_image, read_label
from attnseg.errors import DataError

# Palette index -> colour, as an annotation tool writes it: 0 black, 1 red, 2 green, then unused black entries.
PALETTE = [0, 0, 0, 255, 0, 0, 0, 255, 0] + [0, 0, 0] * 253


def _mask(height: int = 6, width: int = 8) -> np.ndarray:
    """Rows x columns (as Pillow stores them) of indices 0, 1 and 2."""
    mask = np.zeros((height, width), np.uint8)
    mask[1:4, 2:6] = 1
    mask[4, 0:3] = 2
    return mask


def _palette_png(path, mask: np.ndarray) -> None:
    picture = Picture.fromarray(mask).convert("P")
    picture.putpalette(PALETTE)
    picture.save(path)


def _dataset(root, label_writer, labels=None, image_mode: str = "L", channels=None, ending=".png"):
    """A 2-case nnU-Net dataset of Pillow-written pictures; ``label_writer(path, mask)`` saves each label."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        mask = _mask()
        grey = (40 + 100 * (mask > 0)).astype(np.uint8)
        image = Picture.fromarray(grey).convert(image_mode)
        image.save(root / "imagesTr" / f"case_{i}_0000{ending}")
        label_writer(root / "labelsTr" / f"case_{i}{ending}", mask)
    spec = {
        "channel_names": channels or {"0": "US"},
        "labels": labels or {"background": 0, "lesion": 1, "cyst": 2},
        "numTraining": 2,
        "file_ending": ending,
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def test_a_palette_png_mask_reads_as_its_indices_not_its_colours(tmp_path):
    _palette_png(tmp_path / "mask.png", _mask())
    label = read_label(tmp_path / "mask.png")
    assert label.array.shape == (1, 8, 6)  # (C, X, Y): x runs along a row
    np.testing.assert_array_equal(label.array[0], _mask().T)
    report = check_dataset(_dataset(tmp_path / "ds", _palette_png))
    assert report.errors == []
    classes = {c["value"]: c["voxel_fraction"] for c in report.summary()["classes"]}
    assert classes == pytest.approx({0: 33 / 48, 1: 12 / 48, 2: 3 / 48})  # counted by hand from _mask()


def test_palette_indices_that_share_a_colour_stay_apart(tmp_path):
    """Index 3 is drawn in black, as background is: the stored index is the class, whatever the colour."""
    mask = _mask()
    mask[0, 7] = 3
    _palette_png(tmp_path / "mask.png", mask)
    label = read_label(tmp_path / "mask.png")
    assert label.array[0, 7, 0] == 3 and np.count_nonzero(label.array == 3) == 1
    np.testing.assert_array_equal(label.array[0], mask.T)


def test_a_colour_mask_is_refused_saying_how_to_save_a_mask(tmp_path):
    def red(path, mask):
        Picture.fromarray(np.stack([mask * 255, mask * 0, mask * 0], -1)).save(path)

    report = check_dataset(_dataset(tmp_path, red))
    message = str(report.errors[0])
    assert "labelsTr/case_0.png: a label holds one class value per voxel" in message
    assert "8 x 6 image has 3 channels (a mask saved in colour?)" in message
    assert "a greyscale PNG or TIFF, or a palette PNG whose indices are the classes" in message


@pytest.mark.parametrize(("ending", "full"), [(".png", 255), (".tif", 65535)])
def test_a_mask_saved_as_0_and_full_scale_says_how_to_declare_it(tmp_path, ending, full):
    def full_scale(path, mask):
        Picture.fromarray(((mask > 0) * full).astype(np.uint16 if full > 255 else np.uint8)).save(path)

    root = _dataset(tmp_path / "ds", full_scale, labels={"background": 0, "lesion": 1}, ending=ending)
    errors = [str(p) for p in check_dataset(root).errors]
    assert len(errors) == 2 and f"label values [{full}] are not among the declared labels [0, 1]" in errors[0]
    assert f'declare the class as {full} in dataset.json\'s "labels" (e.g. "lesion": {full} instead of 1)' in errors[0]
    (root / "dataset.json").write_text((root / "dataset.json").read_text().replace('"lesion": 1', f'"lesion": {full}'))
    assert check_dataset(root).errors == []


def test_a_colour_picture_where_one_channel_is_expected_says_how_to_store_it(tmp_path):
    Picture.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "rgb_0000.png")
    with pytest.raises(DataError, match=r"rgb_0000.png: 2-D image of 8 x 6 with 3 channels \(colour\?\)") as caught:
        read_image(tmp_path / "rgb_0000.png", multichannel=False)
    assert 'declare them in dataset.json\'s channel_names ({"0": "R", "1": "G", "2": "B"})' in str(caught.value)
    assert "CASE_0000 (R), CASE_0001 (G), CASE_0002 (B)" in str(caught.value)
    assert "convert it to greyscale" in str(caught.value)


RGB_CHANNELS = {"0": "R", "1": "G", "2": "B"}


def colour_picture(mask: np.ndarray) -> np.ndarray:
    """Rows x columns x (R, G, B): three different channels, so that a channel read out of order shows."""
    grey = (40 + 100 * (mask > 0)).astype(np.uint8)
    return np.stack([grey, 255 - grey, np.arange(grey.size, dtype=np.uint8).reshape(grey.shape)], -1)


def _colour_dataset(root, alpha: np.ndarray | None = None):
    """``_dataset`` with one colour picture per case (RGBA when ``alpha`` is given)."""
    _dataset(root, _palette_png, channels=RGB_CHANNELS)
    for i in range(2):
        pixels = colour_picture(_mask())
        if alpha is not None:
            pixels = np.concatenate([pixels, alpha[..., None]], -1)
        Picture.fromarray(pixels).save(root / "imagesTr" / f"case_{i}_0000.png")
    return root


def test_one_rgb_file_per_case_is_channels_0_to_2_as_its_three_grey_files_are(tmp_path, capsys):
    root = _colour_dataset(tmp_path / "one")
    report = check_dataset(root)
    assert report.errors == [] and report.warnings == []
    assert main(["dataset", "check", str(root)]) == 0
    assert "problems: 0 error(s)" in capsys.readouterr().out
    one_file = load_dataset(root).read_image("case_0")
    pixels = colour_picture(_mask())
    for c in range(3):  # the same picture as three greyscale files
        Picture.fromarray(pixels[..., c]).save(tmp_path / f"case_0_000{c}.png")
    three_files = read_case([tmp_path / f"case_0_000{c}.png" for c in range(3)])
    assert one_file.array.shape == (3, 8, 6)
    np.testing.assert_array_equal(one_file.array, three_files.array)
    np.testing.assert_array_equal(one_file.array, pixels.transpose(2, 1, 0))


def test_an_opaque_alpha_is_dropped_with_a_note(tmp_path):
    report = check_dataset(_colour_dataset(tmp_path, alpha=np.full((6, 8), 255, np.uint8)))
    assert report.errors == []
    assert [str(w) for w in report.warnings] == [
        f"warning: {tmp_path / 'imagesTr' / f'case_{i}_0000.png'}: RGBA picture: its alpha, opaque everywhere, "
        "is dropped"
        for i in range(2)
    ]
    np.testing.assert_array_equal(load_dataset(tmp_path).read_image("case_1").array, colour_picture(_mask()).T)


def test_an_rgba_picture_with_transparent_pixels_is_refused_naming_it(tmp_path):
    alpha = np.full((6, 8), 255, np.uint8)
    alpha[0, :2] = 0
    errors = [str(e) for e in check_dataset(_colour_dataset(tmp_path, alpha=alpha)).errors]
    assert errors[0].startswith(
        f"error: {tmp_path / 'imagesTr' / 'case_0_0000.png'}: an RGBA picture with 2 transparent pixel(s) where the "
        "case needs 3 channels (R, G, B)"
    )
    assert "flatten it onto a background and save it as RGB" in errors[0]


def test_a_grey_picture_in_a_colour_dataset_is_refused_naming_it(tmp_path):
    root = _colour_dataset(tmp_path)
    Picture.fromarray(colour_picture(_mask())[..., 0]).save(root / "imagesTr" / "case_1_0000.png")
    errors = [str(e) for e in check_dataset(root).errors]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: {root / 'imagesTr' / 'case_1_0000.png'}: a grey picture where the case needs 3 channels "
        "(one colour file, or files CASE_0000 to CASE_0002)"
    )


def test_a_lone_channel_file_of_a_volume_dataset_is_still_missing_its_others(make_nnunet):
    root = make_nnunet(cases=2, channels=2)
    (root / "imagesTr" / "case_000_0001.nii.gz").unlink()
    errors = [str(e) for e in check_dataset(root).errors]
    assert f"error: {root / 'imagesTr' / 'case_000_0001.nii.gz'}: missing channel file" in errors


def test_the_check_of_a_2d_dataset_claims_no_orientation(tmp_path):
    text = check_dataset(_dataset(tmp_path, _palette_png)).format()
    assert "problems: 0 error(s)" in text and "orientation" not in text
