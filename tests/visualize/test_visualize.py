import numpy as np
import pytest
from PIL import Image

from attnseg.errors import OutputExistsError
from attnseg.visualize.curves import plot_progress
from attnseg.visualize.overlay import save_attention_maps, save_comparison


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_comparison_overlay(tmp_path):
    image = np.random.default_rng(0).normal(size=(40, 50))
    reference = np.zeros((40, 50), dtype=np.uint8)
    reference[10:20, 10:30] = 1
    reference[25:35, 5:15] = 2
    prediction = np.roll(reference, 2, axis=0)
    path = tmp_path / "overlay.png"
    save_comparison(image, reference, prediction, {"background": 0, "gm": 1, "wm": 2}, path, title="case 1")
    width, height = _png_size(path)
    assert width > 2 * height  # three panels side by side
    with pytest.raises(OutputExistsError, match=r"overlay\.png exists; pass overwrite=True"):
        save_comparison(image, reference, prediction, {"background": 0, "gm": 1}, path)


def test_attention_maps(tmp_path):
    image = np.random.default_rng(0).normal(size=(32, 32))
    maps = {"level2": np.random.default_rng(1).random((32, 32)), "level3": np.zeros((32, 32))}
    save_attention_maps(image, maps, tmp_path / "attention.png")
    assert _png_size(tmp_path / "attention.png")[0] > 0


def test_progress_plot_handles_missing_validation(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 1.0, "lr": 1e-3, "val_dice_mean": 0.5},
        {"epoch": 2, "train_loss": 0.8, "lr": 5e-4},
        {"epoch": 3, "train_loss": 0.6, "lr": 1e-4, "val_dice_mean": 0.7},
    ]
    plot_progress(history, tmp_path / "progress.png")
    plot_progress(history, tmp_path / "progress.png")  # rewritten every epoch
    assert _png_size(tmp_path / "progress.png")[0] > 0
