"""`attnseg train --time-budget`: epochs planned from measured costs, the run ends on time."""

import time

import pytest
import torch

from attnseg.cli import main
from attnseg.errors import ConfigError
from attnseg.model_dir import ModelDir
from attnseg.training.budget import EpochCost, epochs_that_fit, parse_duration, shorter_epochs, spaced_validation
from attnseg.training.config import load_config


@pytest.mark.parametrize(
    ("text", "seconds"), [(300, 300.0), ("90s", 90.0), ("5m", 300.0), ("1.5h", 5400.0), (" 2 min ", 120.0)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "-3m", "0", "m", True])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match="time budget"):
        parse_duration(text)


def test_config_takes_a_budget():
    assert load_config(None, ["training.time_budget=5m"]).training.time_budget == 300.0
    with pytest.raises(ConfigError, match="expected a duration"):
        load_config(None, ["training.time_budget=soon"])


def test_epochs_that_fit_by_hand():
    cost = EpochCost(train=10.0, validation=4.0, writing=1.0)
    # validating every epoch: 15 s each -> 6 in 95 s; every 2: 11 s + 4 s every other -> 7 epochs need 77+16=93
    assert epochs_that_fit(95.0, cost, val_every=1) == 6
    assert epochs_that_fit(95.0, cost, val_every=2) == 7
    assert epochs_that_fit(5.0, cost, val_every=1) == 0


def test_validation_is_spaced_to_a_fifth_of_the_time():
    assert spaced_validation(EpochCost(10.0, 6.0, 1.0), 1, fixed=False) == 3  # 6 / (0.2 * 10)
    assert spaced_validation(EpochCost(10.0, 6.0, 1.0), 1, fixed=True) == 1
    assert spaced_validation(EpochCost(10.0, 1.0, 1.0), 2, fixed=False) == 2


def test_training_ends_within_its_budget(make_nnunet, tmp_path, capsys):
    dataset = make_nnunet(cases=4, shape=(24, 20, 8))
    output = tmp_path / "run"
    budget = 25.0
    started = time.monotonic()
    status = main([
        "train", "--dataset", str(dataset), "--output", str(output), "--time-budget", f"{budget:g}s",
        "--no-progress", "--set", "network.features=[4,8,16]", "--set", "data.batch_size=2",
        "--set", "training.iterations_per_epoch=3",
    ])  # fmt: skip
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    assert status == 0
    assert elapsed <= budget + 3.0, f"took {elapsed:.1f} s for a {budget:g} s budget\n{out}"
    assert f"time budget {budget:.0f} s" in out and "plan:" in out
    epochs = torch.load(output / ModelDir.CHECKPOINT, weights_only=True)["state"]["epoch"]
    assert epochs >= 3, out  # the budget was used, not a default of one epoch
    assert (output / ModelDir.WEIGHTS).exists()


def test_too_slow_for_whole_epochs_gets_shorter_ones():
    cost = EpochCost(train=100.0, validation=5.0, writing=1.0)  # 2 s a step, 50 steps an epoch
    # 60 s: 4 epochs need 4 x 1 s writing + 4 x 5 s validation = 24 s, leaving 36 s = 18 steps: 4 per epoch
    iterations, shorter = shorter_epochs(60.0, cost, 50, val_every=1)
    assert iterations == 4 and shorter.train == 8.0
    assert epochs_that_fit(60.0, shorter, val_every=1) == 4
    assert shorter_epochs(1000.0, cost, 50, val_every=1) == (50, cost)  # whole epochs fit: unchanged
