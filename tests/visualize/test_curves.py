import pytest
from PIL import Image

from attnseg.errors import DataError
from attnseg.visualize.curves import plot_progress, progress_figure, read_log

HISTORY = [
    {"epoch": 1, "train_loss": 1.0, "lr": 1e-3, "val_dice_mean": 0.5, "val_dice_gm": 0.4},
    {"epoch": 2, "train_loss": 0.8, "lr": 5e-4},
    {"epoch": 3, "train_loss": 0.6, "lr": 1e-4, "val_dice_mean": 0.7, "val_dice_gm": 0.6},
]


def test_progress_plot_handles_missing_validation(tmp_path):
    plot_progress(HISTORY, tmp_path / "progress.png")
    plot_progress(HISTORY, tmp_path / "progress.png")  # rewritten every epoch
    with Image.open(tmp_path / "progress.png") as picture:
        assert picture.format == "PNG" and picture.width > picture.height
    loss = progress_figure(HISTORY).axes[0]
    assert list(loss.lines[0].get_xdata()) == [1, 2, 3]
    dice = progress_figure(HISTORY).axes[2]  # the validation twin axis
    assert sorted(line.get_label() for line in dice.lines) == ["dice_gm", "dice_mean"]
    assert list(dice.lines[0].get_xdata()) == [1, 3]


def test_read_log_gives_back_the_history(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(
        "epoch,train_loss,lr,val_dice_mean,val_dice_gm,seconds\n"
        "1,1.0,0.001,0.5,0.4,2.0\n2,0.8,0.0005,,,2.1\n3,0.6,0.0001,0.7,0.6,2.2\n"
    )
    rows = read_log(log)
    assert rows[1] == {"epoch": 2.0, "train_loss": 0.8, "lr": 0.0005, "seconds": 2.1}
    assert rows[2]["val_dice_gm"] == 0.6
    log.write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(DataError, match="not a training log"):
        read_log(log)
    log.write_text("epoch,train_loss,lr\n1,x,0.1\n")
    with pytest.raises(DataError, match="line 2 holds a value that is not a number"):
        read_log(log)
    with pytest.raises(DataError, match="cannot read the training log"):
        read_log(tmp_path / "missing.csv")
