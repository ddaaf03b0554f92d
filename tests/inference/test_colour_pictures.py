"""One colour picture per case (nnU-Net's natural-image layout) through the command line: a tiny model trained
on RGB PNGs written with Pillow predicts masks of the pictures' size, the same masks bit for bit from one RGB
file as from its three grey files, takes one RGB file given with -i, draws its attention, and refuses a grey
picture naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as Picture

from attnseg.cli import main

HEIGHT, WIDTH = 24, 32
TINY = [
    "--epochs", "1", "--no-progress",
    "--set", "network.features=[4,8,16]",
    "--set", "data.batch_size=2",
    "--set", "training.iterations_per_epoch=2",
    "--set", "training.amp=off",
]  # fmt: skip


def _picture(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows x columns x RGB, mask): a disc brighter in red than its background, with noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    mask = ((rows - 10 - seed) ** 2 + (cols - 14 - seed) ** 2 < 36).astype(np.uint8)
    base = rng.integers(0, 60, (HEIGHT, WIDTH, 3))
    pixels = base + mask[..., None] * np.array([150, 40, 90])
    return pixels.astype(np.uint8), mask


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model folder, dataset folder) of a tiny model trained on one RGB PNG per case."""
    root = tmp_path_factory.mktemp("colour") / "Dataset010_Skin"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        pixels, mask = _picture(i)
        Picture.fromarray(pixels).save(root / "imagesTr" / f"skin_{i}_0000.png")
        Picture.fromarray(mask).save(root / "labelsTr" / f"skin_{i}.png")
    spec = {
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": 4,
        "file_ending": ".png",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    assert main(["dataset", "check", str(root)]) == 0
    model = root.parent / "model"
    assert main(["train", "--dataset", str(root), "--output", str(model), *TINY]) == 0
    return model, root


def _predict(model: Path, output: Path, *inputs: Path) -> int:
    return main(["predict", "-m", str(model), "-o", str(output), "-i", *map(str, inputs), "--no-progress"])


def test_one_rgb_file_and_three_grey_files_give_the_same_masks_of_the_pictures_size(colour_model, tmp_path):
    model, root = colour_model
    three = tmp_path / "three"
    three.mkdir()
    for path in sorted((root / "imagesTr").iterdir()):
        pixels = np.asarray(Picture.open(path))
        for c in range(3):  # the same pictures as one greyscale file per channel
            Picture.fromarray(pixels[..., c]).save(three / path.name.replace("_0000", f"_{c:04d}"))
    assert _predict(model, tmp_path / "from_one", root / "imagesTr") == 0
    assert _predict(model, tmp_path / "from_three", three) == 0
    names = [f"skin_{i}.png" for i in range(4)]
    assert sorted(p.name for p in (tmp_path / "from_one").glob("skin_*.png")) == names
    for name in names:
        one, other = Picture.open(tmp_path / "from_one" / name), Picture.open(tmp_path / "from_three" / name)
        assert one.size == (WIDTH, HEIGHT) and one.mode in ("L", "I;16")
        np.testing.assert_array_equal(np.asarray(one), np.asarray(other))
    fingerprint = json.loads((model / "fingerprint.json").read_text())
    assert fingerprint["channels"] == 3 and fingerprint["channel_names"] == ["R", "G", "B"]
    qc = json.loads((tmp_path / "from_one" / "qc.json").read_text())
    assert qc["summary"]["cases"] == 4 and "channels" not in qc["summary"]["flags"]
    assert all("intensity_distance" in case["measures"] for case in qc["cases"])  # R, G, B against training's


def test_one_rgb_file_given_with_i_is_one_case_and_its_attention_draws(colour_model, tmp_path):
    model, root = colour_model
    photo = tmp_path / "photo.png"
    photo.write_bytes((root / "imagesTr" / "skin_2_0000.png").read_bytes())
    assert _predict(model, tmp_path / "out", photo) == 0
    assert _predict(model, tmp_path / "reference", root / "imagesTr" / "skin_2_0000.png") == 0
    mask = np.asarray(Picture.open(tmp_path / "out" / "photo.png"))
    np.testing.assert_array_equal(mask, np.asarray(Picture.open(tmp_path / "reference" / "skin_2.png")))
    assert main(["visualize", "-m", str(model), "-i", str(photo), "-o", str(tmp_path / "attention")]) == 0
    assert (tmp_path / "attention" / "photo_attention.png").is_file()


def test_a_grey_picture_for_a_colour_model_is_refused_naming_it(colour_model, tmp_path, capsys):
    model, _ = colour_model
    grey = tmp_path / "grey.png"
    Picture.fromarray(_picture(1)[0][..., 0]).save(grey)
    assert _predict(model, tmp_path / "out", grey) != 0
    assert f"{grey}: a grey picture where the case needs 3 channels" in capsys.readouterr().err
    assert not (tmp_path / "out" / "grey.png").exists()
