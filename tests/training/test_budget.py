"""`attnseg train --time-budget`: epochs planned from measured costs, the run ends on time.

The runs here read time from a simulated clock (:class:`SimulatedMachine`), so the plan and the stopping
rule are checked to the second, however busy the machine that runs the tests."""

import pytest
import torch

from attnseg.cli import main
from attnseg.data import fingerprint_dataset, load_dataset
from attnseg.distributed import DistContext
from attnseg.errors import ConfigError
from attnseg.model_dir import ModelDir
from attnseg.runtime import runtime_candidates
from attnseg.training import run
from attnseg.training.budget import (
    EpochCost,
    TimeBudget,
    coarsening_for_budget,
    epochs_that_fit,
    format_duration,
    parse_duration,
    shorter_epochs,
    shortest_run_seconds,
    smaller_patch,
    spaced_validation,
)
from attnseg.training.config import load_config
from attnseg.training.run import plan_for_budget, plan_from_config, train
from attnseg.training.step import choose_runtime, random_batch


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


class SimulatedMachine:
    """A clock that moves only when the run works, by the costs set here, for ``train(clock=...)``.

    Every forward pass of a network built by ``attnseg.training.run.build_model`` (the runtime's choice,
    the resolution plan, the pre-flight batch, every training step, every validation batch) costs
    ``seconds_per_pixel`` for each pixel of its batch, three times that in training mode (forward,
    backward and the optimizer step); preprocessing the cases costs ``preprocessing_s``; writing a
    checkpoint or the weights ``writing_s``. From ``slow_from`` simulated seconds on (until ``slow_until``,
    if given), training passes cost ``slowdown`` times more (a neighbour took the machine). Nothing else
    costs anything: the result
    does not depend on how busy the real machine is. The default costs are some 30 times what the real
    work takes here, so a measurement that read the real clock instead would show.
    """

    START = 1000.0

    def __init__(self, monkeypatch, *, seconds_per_pixel=1e-3 / 3, preprocessing_s=10.0, writing_s=3.0,
                 slow_from=None, slowdown=1.0, slow_until=float("inf")):  # fmt: skip
        self.now = self.START
        self.rate, self.writing_s = seconds_per_pixel, writing_s
        self.slow_from, self.slowdown, self.slow_until = slow_from, slowdown, slow_until
        build_model, preprocess = run.build_model, run.preprocess_cases

        def built(config, plan):
            model = build_model(config, plan)
            model.register_forward_pre_hook(lambda module, args: self._forward(module.training, args[0]))
            return model

        def preprocessed(*args, **kwargs):
            self.now += preprocessing_s
            return preprocess(*args, **kwargs)

        monkeypatch.setattr(run, "build_model", built)
        monkeypatch.setattr(run, "preprocess_cases", preprocessed)
        for name in ("save_checkpoint", "save_weights"):
            monkeypatch.setattr(ModelDir, name, self._charged(getattr(ModelDir, name)))

    def clock(self) -> float:
        return self.now

    def _forward(self, training: bool, batch: torch.Tensor) -> None:
        seconds = self.rate * batch.numel()
        if training:
            slow = self.slow_from is not None and self.slow_from <= self.now - self.START < self.slow_until
            seconds *= 3 * (self.slowdown if slow else 1.0)
        self.now += seconds

    def _charged(self, write):
        def charged(*args, **kwargs):
            self.now += self.writing_s
            return write(*args, **kwargs)

        return charged


def _train_on(machine: SimulatedMachine, dataset, output, budget: float, *extra: str):
    config = load_config(None, [
        f"data.dataset={dataset}", f"output={output}", f"training.time_budget={budget:g}s",
        "network.features=[4,8,16]", "data.batch_size=2", "training.iterations_per_epoch=3", *extra,
    ])  # fmt: skip
    started = machine.clock()
    train(config, show_progress=False, clock=machine.clock)
    return machine.clock() - started, torch.load(output / ModelDir.CHECKPOINT, weights_only=True)["state"]


@pytest.mark.parametrize("preprocessing_s", [10.0, 80.0])
def test_training_ends_within_its_budget(make_nnunet, tmp_path, capsys, monkeypatch, preprocessing_s):
    """The whole of ``train`` (preprocessing, the runtime's choice, the plan, training, validation,
    writing) fits the budget on a simulated clock; slow preprocessing leaves fewer epochs, not a late end."""
    machine = SimulatedMachine(monkeypatch, preprocessing_s=preprocessing_s)
    dataset = make_nnunet(cases=4, shape=(24, 20, 8))
    budget = 250.0
    elapsed, state = _train_on(machine, dataset, tmp_path / "run", budget)
    out = capsys.readouterr().out
    assert elapsed <= budget, f"took {elapsed:.2f} s for a {budget:g} s budget\n{out}"
    assert elapsed >= 0.75 * budget, f"used only {elapsed:.2f} s of a {budget:g} s budget\n{out}"
    assert f"time budget {format_duration(budget)}" in out and "plan:" in out
    assert state["epoch"] >= 3, out  # the budget was used, not a default of one epoch
    threads = _read_runtime(tmp_path / "run")["threads"]  # recorded with the layout and precision
    assert threads["count"] >= 1 and threads["reason"], threads
    assert (tmp_path / "run" / ModelDir.WEIGHTS).exists()


def test_epochs_slower_than_planned_shorten_the_run(make_nnunet, tmp_path, capsys, monkeypatch):
    """Training steps become three times slower halfway through the budget, after the plan was made: the
    plan is shortened after every epoch, and the run still ends within the budget, with fewer epochs."""
    dataset = make_nnunet(cases=4, shape=(24, 20, 8))
    budget = 250.0
    _, steady = _train_on(SimulatedMachine(monkeypatch), dataset, tmp_path / "steady", budget)
    machine = SimulatedMachine(monkeypatch, slow_from=budget / 2, slowdown=3.0)
    elapsed, slowed = _train_on(machine, dataset, tmp_path / "slowed", budget)
    out = capsys.readouterr().out
    assert elapsed <= budget, f"took {elapsed:.2f} s for a {budget:g} s budget\n{out}"
    assert 3 <= slowed["epoch"] < steady["epoch"], out


def test_one_slow_epoch_does_not_cut_the_run_short(make_nnunet, tmp_path, capsys, monkeypatch):
    """Training steps are four times slower for a few seconds, one epoch's worth, a third of the way in (a
    neighbour's job came and went): the plan follows the median of the recent epochs, so the run goes back to
    its length and uses the budget, where planning from the last epoch alone cut it short for good."""
    dataset = make_nnunet(cases=4, shape=(24, 20, 8))
    budget = 250.0
    machine = SimulatedMachine(monkeypatch, slow_from=budget / 3, slow_until=budget / 3 + 5.0, slowdown=4.0)
    elapsed, _ = _train_on(machine, dataset, tmp_path / "run", budget)
    out = capsys.readouterr().out
    assert 0.9 * budget <= elapsed <= budget, f"took {elapsed:.2f} s for a {budget:g} s budget\n{out}"
    assert "median of the last" in out, out


def test_too_slow_for_whole_epochs_gets_shorter_ones():
    cost = EpochCost(train=100.0, validation=5.0, writing=1.0)  # 2 s a step, 50 steps an epoch
    # 60 s: 4 epochs need 4 x 1 s writing + 4 x 5 s validation = 24 s, leaving 36 s = 18 steps: 4 per epoch
    iterations, shorter = shorter_epochs(60.0, cost, 50, val_every=1)
    assert iterations == 4 and shorter.train == 8.0
    assert epochs_that_fit(60.0, shorter, val_every=1) == 4
    assert shorter_epochs(1000.0, cost, 50, val_every=1) == (50, cost)  # whole epochs fit: unchanged


def test_coarsening_for_budget_by_hand():
    # pixels relative to full resolution; a step of 1 s measured, 1.3 x for loading and the optimizer
    costs = {1.0: 1.0, 1.25: 0.64, 1.5: 0.44, 2.0: 0.25}
    assert coarsening_for_budget(2000.0, 1.0, costs) == 1.0  # 2000 / 1.3 = 1538 steps >= 1000
    assert coarsening_for_budget(800.0, 1.0, costs) == 1.5  # 615 at 1, 962 at 1.25, 1399 at 1.5
    assert coarsening_for_budget(100.0, 1.0, costs) == 2.0  # nothing gives 1000: the coarsest


def _budget_plan(dataset, config, seconds, machine: SimulatedMachine):
    """The plan, and the plan for a budget of ``seconds`` on ``machine`` (steps timed on its clock)."""
    data = load_dataset(dataset)
    fingerprint = fingerprint_dataset(data)
    plan = plan_from_config(config, data, fingerprint)
    budget = TimeBudget.starting_now(seconds, machine.clock)
    return plan, plan_for_budget(config, data, fingerprint, plan, budget, torch.device("cpu"), DistContext())[0]


def test_a_short_budget_trains_2d_at_a_coarser_spacing(make_nnunet, capsys, monkeypatch):
    machine = SimulatedMachine(monkeypatch, seconds_per_pixel=1e-4 / 3)  # a step of 160 x 128: 4.1 s; 80 x 64: 1 s
    dataset = make_nnunet(cases=2, shape=(160, 128, 4), spacing=(1.0, 1.0, 3.0))
    config = load_config(None, ["network.features=[4,8,16]", "data.batch_size=2", f"data.dataset={dataset}"])
    plan, chosen = _budget_plan(dataset, config, 5.0, machine)  # ~2 s of training: far fewer than 1000 steps
    assert plan.target_spacing == (1.0, 1.0, None) and plan.patch_size == (160, 128)
    assert chosen.target_spacing == (2.0, 2.0, None) and chosen.patch_size == (80, 64)
    assert "training at 2 x 2 mm in-plane, slices of 80 x 64" in capsys.readouterr().out
    _, kept = _budget_plan(dataset, config, 36000.0, machine)  # ten hours: thousands of steps at full size
    assert kept == plan


def test_small_slices_are_not_coarsened_below_64_pixels(make_nnunet, monkeypatch):
    dataset = make_nnunet(cases=2, shape=(96, 80, 4), spacing=(1.0, 1.0, 3.0))
    config = load_config(None, ["network.features=[4,8,16]", "data.batch_size=2", f"data.dataset={dataset}"])
    plan, chosen = _budget_plan(dataset, config, 5.0, SimulatedMachine(monkeypatch, seconds_per_pixel=1e-4 / 3))
    assert plan.patch_size == (96, 80)
    assert chosen.target_spacing == (1.25, 1.25, None)  # 80 / 1.5 < 64: not 1.5 or 2


def test_a_spacing_set_by_hand_is_kept_under_a_budget(make_nnunet, tmp_path):
    dataset = make_nnunet(cases=2, shape=(32, 24, 6), spacing=(1.0, 1.0, 3.0))
    output = tmp_path / "run"
    status = main([
        "train", "--dataset", str(dataset), "--output", str(output), "--time-budget", "8s", "--fold", "all",
        "--no-progress", "--set", "network.features=[4,8,16]", "--set", "data.batch_size=2",
        "--set", "data.target_spacing=[1.0,1.0,null]",
    ])  # fmt: skip
    assert status == 0
    assert ModelDir(output).load_plan().target_spacing == (1.0, 1.0, None)


def _read_runtime(output) -> dict:
    return ModelDir(output).runtime()


def test_3d_runtime_choice_too_costly_for_the_budget_is_skipped(make_nnunet, tmp_path, capsys, monkeypatch):
    """3D patches on a slow machine: a training step of 48 x 48 x 32 (batch 2) costs ~13 s, so timing
    every layout and precision (a warm-up and three rounds each) would take most of the 150 s budget
    or more (2 or 4 candidates). The
    default candidate is kept unmeasured (runtime.json says why) and the whole run still fits."""
    machine = SimulatedMachine(monkeypatch, seconds_per_pixel=3e-5)
    dataset = make_nnunet(cases=4, shape=(40, 40, 24), spacing=(1.0, 1.0, 1.0))
    budget = 150.0
    elapsed, state = _train_on(machine, dataset, tmp_path / "run", budget, "network.spatial_dims=3")
    out = capsys.readouterr().out
    runtime = _read_runtime(tmp_path / "run")
    assert "not measured" in runtime["reason"] and "time budget" in runtime["reason"], runtime
    assert list(runtime["step_ms"]) == [runtime_candidates(torch.device("cpu"))[0].name]
    assert elapsed <= budget, f"took {elapsed:.2f} s for a {budget:g} s budget\n{out}"
    assert elapsed >= 0.75 * budget, f"used only {elapsed:.2f} s of a {budget:g} s budget\n{out}"
    assert state["epoch"] >= 3, out


def test_runtime_candidates_are_timed_when_that_is_cheap(make_nnunet, monkeypatch):
    """The same choice with a budget that the timing is a small share of: every candidate measured."""
    machine = SimulatedMachine(monkeypatch, seconds_per_pixel=1e-6)
    dataset = make_nnunet(cases=2, shape=(40, 40, 24), spacing=(1.0, 1.0, 1.0))
    config = load_config(None, [f"data.dataset={dataset}", "network.spatial_dims=3", "network.features=[4,8,16]",
                                "data.batch_size=2"])  # fmt: skip
    plan = plan_from_config(config, load_dataset(dataset), fingerprint_dataset(load_dataset(dataset)))
    model = run.build_model(config, plan)
    image, label = random_batch((2, 1, *plan.patch_size), plan.num_classes, torch.device("cpu"))
    batch = {"image": image, "label": label}
    candidates = runtime_candidates(torch.device("cpu"))
    for seconds, measured in ((600.0, True), (10.0, False)):  # a step ~0.44 s: 9 steps are 4 s, > 5% of 10 s
        budget = TimeBudget.starting_now(seconds, machine.clock)
        chosen = choose_runtime(config, model, run.build_loss(config, model), batch, torch.device("cpu"), budget)
        assert (len(chosen.step_ms) == len(candidates)) is measured, chosen
        assert ("not measured" in chosen.reason) is not measured, chosen


def test_a_budget_spent_on_set_up_is_refused(make_nnunet, tmp_path, monkeypatch):
    """Preprocessing took 240 s of a 250 s budget: refused with the reason and what to do, no model."""
    machine = SimulatedMachine(monkeypatch, preprocessing_s=240.0)
    dataset = make_nnunet(cases=4, shape=(24, 20, 8))
    with pytest.raises(ConfigError, match=r"cannot be met.*longer --time-budget"):
        _train_on(machine, dataset, tmp_path / "run", 250.0)
    assert not (tmp_path / "run" / ModelDir.WEIGHTS).exists()


@pytest.mark.parametrize(
    ("dims", "seconds_per_pixel", "budget"),
    [
        ("3", 3e-5, 20.0),  # a step of 48 x 48 x 32 (batch 2): ~13 s, and a validation; 20 s do not hold 4 of them
        ("3", 3e-4, 60.0),  # ~130 s: one step alone is twice the budget (a 128^3 step on a busy CPU)
        ("2", 3e-2, 60.0),  # 2D slices of 32 x 32 (batch 2): ~180 s a step
    ],
)
@pytest.mark.parametrize("settings", [(), ("training.layout=channels_last", "training.amp=off")])
def test_a_step_the_budget_cannot_afford_is_refused_before_it_is_spent(
    make_nnunet, tmp_path, monkeypatch, dims, seconds_per_pixel, budget, settings
):
    """A training step costlier than what the budget leaves for the shortest run is refused from an estimate
    (a step on a smaller patch, scaled by voxels) before any whole step runs, with the budget, the estimate and
    what to do, whether or not the runtime is left to measure: the run ends within 10% of its budget (it
    used to overrun by the step that showed it)."""
    machine = SimulatedMachine(monkeypatch, seconds_per_pixel=seconds_per_pixel, preprocessing_s=1.0)
    dataset = make_nnunet(cases=4, shape=(40, 40, 24), spacing=(1.0, 1.0, 1.0))
    fixed = "data.patch_size=[48,48,32]" if dims == "3" else "data.patch_size=[32,32]"
    refusal = rf"time budget {format_duration(budget)} cannot be met.*a step estimated at ~\d+.*--spatial-dims 2"
    with pytest.raises(ConfigError, match=refusal):
        _train_on(machine, dataset, tmp_path / "run", budget, f"network.spatial_dims={dims}", "data.fold=0",
                  fixed, *settings)  # fmt: skip
    assert not (tmp_path / "run" / ModelDir.WEIGHTS).exists()
    assert machine.clock() - machine.START <= 1.1 * budget


def test_shortest_run_by_hand():
    # two steps measured before training, one trained, 6 validation forwards of a third of a step, 1 s writing
    assert shortest_run_seconds(3.0, 6) == pytest.approx(3.0 * 3 + 6 + 1.0)
    assert smaller_patch((128, 128, 128), 16) == (64, 64, 64)
    assert smaller_patch((96, 112), 16) == (48, 48)
    assert smaller_patch((16, 40), 16) == (16, 16)  # never below the network's multiple
    assert smaller_patch((20,), 32) == (20,)  # nor above the side itself


def test_a_budget_cut_short_still_validates_at_the_end(make_nnunet, tmp_path, capsys, monkeypatch):
    """Validation every 5 epochs (set by hand); training becomes 6 times slower late in the run,
    so the budget ends the run at an epoch not due to validate. The final weights are still validated
    and reported, within the budget."""
    dataset = make_nnunet(cases=5, shape=(24, 20, 8))
    budget = 250.0
    machine = SimulatedMachine(monkeypatch, slow_from=0.75 * budget, slowdown=6.0)
    elapsed, state = _train_on(machine, dataset, tmp_path / "run", budget, "data.fold=0", "training.val_every=5")
    out = capsys.readouterr().out
    assert elapsed <= budget, f"took {elapsed:.2f} s for a {budget:g} s budget\n{out}"
    assert state["epoch"] % 5 != 0, out  # the case this test is about: the last epoch was not due to validate
    assert "val_dice_mean" in state["history"][-1], out
    last_epoch = [line for line in out.splitlines() if line.startswith("epoch")][-1]  # calibration's line follows
    assert state["best_epoch"] >= 1 and "val dice" in last_epoch, out


def test_a_short_budget_trains_3d_at_a_coarser_spacing(make_nnunet, capsys, monkeypatch):
    """3D as 2D: 128^3 patches do not give enough steps in a short budget; 2 mm (80^3 patches) is taken."""
    machine = SimulatedMachine(monkeypatch, seconds_per_pixel=1e-6)
    dataset = make_nnunet(cases=2, shape=(144, 144, 144), spacing=(1.0, 1.0, 1.0))
    config = load_config(None, ["network.features=[4,8,16]", "data.batch_size=2", f"data.dataset={dataset}",
                                "network.spatial_dims=3"])  # fmt: skip
    plan, chosen = _budget_plan(dataset, config, 60.0, machine)
    assert plan.patch_size == (128, 128, 128)
    assert run.budget_may_choose_resolution(config, plan)  # train() lets the budget choose, in 3D as in 2D
    assert chosen.target_spacing == (2.0, 2.0, 2.0) and chosen.patch_size == (80, 80, 80)
    assert "training at 2 x 2 x 2 mm, patches of 80 x 80 x 80" in capsys.readouterr().out


def test_3d_thick_slices_are_not_coarsened_beyond_the_others(make_nnunet, monkeypatch):
    dataset = make_nnunet(cases=2, shape=(144, 144, 40), spacing=(1.0, 1.0, 1.8))
    config = load_config(None, ["network.features=[4,8,16]", "data.batch_size=2", f"data.dataset={dataset}",
                                "network.spatial_dims=3"])  # fmt: skip
    data = load_dataset(dataset)
    fingerprint = fingerprint_dataset(data)
    plan = plan_from_config(config, data, fingerprint)
    assert run._coarsened(config, data, fingerprint, plan, 1.5).target_spacing == (1.5, 1.5, 1.8)
    assert run._coarsened(config, data, fingerprint, plan, 2.0).target_spacing == (2.0, 2.0, 2.0)


def test_the_budget_counts_from_the_command_start(monkeypatch, tmp_path):
    """`attnseg train` hands train() the command's start (before torch's import and the config), so the
    budget covers them too."""
    import time

    seen = {}

    def fake_train(config, **kwargs):
        seen.update(kwargs, entered=time.monotonic())
        raise ConfigError("stop here")

    monkeypatch.setattr(run, "train", fake_train)
    before = time.monotonic()
    status = main(["train", "--dataset", str(tmp_path), "--output", str(tmp_path / "run"), "--time-budget", "1m"])
    assert status == 2
    assert before <= seen["started"] <= seen["entered"], seen
