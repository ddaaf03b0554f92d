"""Training within a wall-clock budget: ``attnseg train --time-budget 5m`` (``training.time_budget``).

The budget covers the whole run, from the start of ``attnseg train`` (reading and preprocessing included)
to the last file written. The trainer measures what an epoch costs on the machine it runs on and plans
how many epochs fit:

1. before the first epoch, a few forward/backward passes on one batch time a training step, and a
   forward pass in eval mode times a validation batch; the plan is made from these (with a margin for
   data loading, augmentation and the optimizer);
2. after every epoch the plan is made again from what epochs really cost (training, validation,
   writing): the median training time of the last :data:`RECENT_EPOCHS` epochs, so that one epoch slowed
   by a neighbouring job does not cut the run short for good (on a shared 2-core machine one such epoch
   once ended a 5-minute run 90 s early), nor one fast epoch lengthen it; the plan may lengthen or shorten,
   and the learning-rate schedule follows it;
3. whatever the median says, the next epoch starts only if it fits at the cost of the last one, so a
   machine that stays slower ends the run within the budget all the same.

When fewer than four whole epochs fit (a slow machine, a short budget, a large network), epochs get
fewer steps (``training.iterations_per_epoch`` shrinks), so that there are four and the schedule and
validation still happen within the budget.

For a network whose plan the user left to attnseg (2D or 3D), the budget also chooses the resolution
before anything is preprocessed: when fewer than :data:`MIN_BUDGET_STEPS` training steps would fit at
the dataset's own spacing, the plan coarsens it (by 1.25, 1.5 or at most 2, keeping slices or patches at
least :data:`MIN_COARSE_SIDE` pixels across; in 3D a thick-slice axis is not coarsened beyond the others),
as little as gives that many steps. A few hundred steps at full
resolution generalise worse to new subjects than a thousand at a coarser one (docs/generalisation.md
has the figures); on a GPU, or with a longer budget, the full resolution fits and is kept.

The learning-rate schedule follows the planned number of epochs, so it ends at its final value when
the budget does; the best weights (validation Dice) or, without validation, the last are kept as
usual. Validation is spaced out so that it takes at most a fifth of the time, unless
``training.val_every`` is set explicitly.

The budget covers set-up as well: the runtime's candidates (:mod:`attnseg.runtime`) are timed only when
that costs at most :data:`RUNTIME_TIMING_SHARE` of the budget, and a budget that cannot be met (the
set-up spent it, or one step, one validation and writing the model do not fit) is refused with a
ConfigError (:func:`refuse_if_short`), never overrun. Before any whole training step runs, a step is
estimated (from the resolution choice's timing, or from a step on a patch of half the side, scaled by
voxels) and the shortest run (:func:`shortest_run_seconds`) checked against what is left: a 3D step that
alone costs more than the budget is refused before it is spent, not measured by overrunning. A run with
validation cases validates after its last epoch, also when the budget ends it at an epoch not due to
validate (``Trainer._validate_if_owed``).

Every reading of time the budget depends on (its start, what remains, each measured step, epoch,
validation and write) comes from one clock, the :class:`TimeBudget`'s ``clock`` (``time.monotonic``).
:func:`attnseg.training.run.train` takes it as a parameter, so a test can run a whole training on a
simulated clock that advances only by the costs it charges, and check the plan and the stopping rule
without depending on how busy the machine is.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from attnseg.errors import ConfigError
from attnseg.timing import time_call

_DURATION = re.compile(r"^\s*(?P<value>\d+(\.\d*)?|\.\d+)\s*(?P<unit>s|sec|secs|m|min|mins|h|hr|hrs)?\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600}
# Share of a step's forward/backward time added for data loading, augmentation and the optimizer step,
# until the first epoch has been measured.
FIRST_GUESS_MARGIN = 1.3
# Validation may take at most this share of the training time when the budget spaces it out.
VALIDATION_SHARE = 0.2
# Fewer training steps than this at the plan's resolution: a 2D plan coarsens its in-plane spacing.
MIN_BUDGET_STEPS = 1000
# The in-plane coarsening factors tried, finest first; the last is taken when none gives enough steps.
COARSENING_FACTORS = (1.0, 1.25, 1.5, 2.0)
# A coarser slice keeps at least this many pixels along its shorter side (small images stay as they are).
MIN_COARSE_SIDE = 64
# With a budget, the runtime candidates (attnseg.runtime) are timed only when that costs at most this share.
RUNTIME_TIMING_SHARE = 0.05
# A budget too short for this many whole epochs gets shorter epochs instead (the schedule needs a few).
MIN_EPOCHS = 4
# A measurement costing more than this share of the budget is taken once, not repeated (time_within_budget).
CHEAP_MEASUREMENT_SHARE = 0.01
# Whole training steps a costly step (over 1% of the budget) costs a budgeted run before its first epoch:
# timing the runtime's default candidate, and the pre-flight batch, whose time the plan takes as a step's.
STEPS_BEFORE_TRAINING = 2
# Seconds of writing a checkpoint and the logs, until an epoch has measured it.
FIRST_GUESS_WRITING = 1.0
# epochs whose median training time plans the rest of the run
RECENT_EPOCHS = 5


def parse_duration(value: float | int | str) -> float:
    """Seconds from ``300``, ``"300s"``, ``"5m"``, ``"1.5h"``."""
    if isinstance(value, bool):
        raise ConfigError(f"time budget {value!r}: expected a duration such as 300, 90s, 5m or 1.5h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ConfigError(f"time budget {value!r}: expected a duration such as 300, 90s, 5m or 1.5h")
        seconds = float(match["value"]) * _UNIT_SECONDS[(match["unit"] or "s").lower()]
    if not seconds > 0 or not math.isfinite(seconds):
        raise ConfigError(f"time budget {value!r}: must be a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


Clock = Callable[[], float]


@dataclass(frozen=True)
class TimeBudget:
    """``seconds`` of wall time from ``started`` (a reading of ``clock`` at the start of the run).

    ``clock`` is what the whole run reads time from for its budget: ``time.monotonic``, or a test's
    simulated clock."""

    seconds: float
    started: float
    clock: Clock = field(default=time.monotonic, compare=False, repr=False)

    @classmethod
    def starting_now(cls, seconds: float, clock: Clock = time.monotonic) -> TimeBudget:
        return cls(seconds, clock(), clock)

    def remaining(self) -> float:
        return self.started + self.seconds - self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started


@dataclass(frozen=True)
class EpochCost:
    """Seconds one epoch costs: training, one validation, writing checkpoint and logs."""

    train: float
    validation: float
    writing: float


def reserve_seconds(budget: float) -> float:
    """Kept free at the end of a budget: the final weights, post-processing choice and process exit."""
    return 2.0 + 0.03 * budget


def training_seconds(budget: TimeBudget) -> float:
    """What is left of ``budget`` for training steps, before any is measured: the reserve and a
    validation share set aside."""
    return max(0.0, (budget.remaining() - reserve_seconds(budget.seconds)) * (1 - VALIDATION_SHARE))


def time_within_budget(
    fn: Callable[[], object], budget: TimeBudget, device: torch.device, repeats: int, once: float | None = None
) -> float:
    """Seconds of one call of ``fn`` on ``budget``'s clock: one call's when it costs more than
    CHEAP_MEASUREMENT_SHARE of the budget (measuring must not spend the budget it plans), else the median of
    ``repeats`` more. ``once``: a call already timed, so that a costly one is not run again only to be timed."""
    if once is None:
        once = time_call(fn, repeats=1, warmup=0, device=device, clock=budget.clock)
    if once > CHEAP_MEASUREMENT_SHARE * budget.seconds:
        return once
    return time_call(fn, repeats=repeats, warmup=0, device=device, clock=budget.clock)


def refuse_if_short(budget: TimeBudget, needed: float, what: str) -> None:
    """Raise a ConfigError when ``needed`` seconds (``what``: the least the run still has to do) and the
    final reserve do not fit in what is left of ``budget``: a budget the machine cannot meet is refused
    as soon as that is known, never overrun silently."""
    remaining = budget.remaining()
    if needed + reserve_seconds(budget.seconds) <= remaining:
        return
    at_least = budget.elapsed() + needed + reserve_seconds(budget.seconds)
    raise ConfigError(
        f"time budget {format_duration(budget.seconds)} cannot be met on this machine: {what} needs "
        f"~{format_duration(needed)} and {format_duration(reserve_seconds(budget.seconds))} are kept for "
        f"writing the model, but {format_duration(max(remaining, 0.0))} of it is left after "
        f"{format_duration(budget.elapsed())} of set-up. Give a longer --time-budget (at least "
        f"~{format_duration(at_least * 1.25)}), or a cheaper run: a smaller data.patch_size or data.batch_size, "
        "fewer network.features, data.target_spacing coarser, or a 2D network (--spatial-dims 2) instead of 3D"
    )


def shortest_run_seconds(step: float, validation_batches: int) -> float:
    """What the shortest budgeted run costs after its set-up, for training steps of ``step`` seconds: the
    :data:`STEPS_BEFORE_TRAINING` steps the run measures, one step of training, one validation of
    ``validation_batches`` forward passes (a third of a step each: no backward pass, no update) and writing the
    model once. Checked against an estimated step before any whole step is run, so that a step the budget cannot
    afford is refused before it is spent (:func:`refuse_if_short`), not measured by overrunning."""
    return step * (STEPS_BEFORE_TRAINING + 1) + validation_batches * step / 3 + FIRST_GUESS_WRITING


def smaller_patch(patch_size: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    """``patch_size`` with every side halved, rounded down to ``multiple`` (not below it, not above the side):
    a step on it costs about an eighth (3D) or a quarter (2D) of a whole one, so it estimates a whole step
    cheaply, scaled by voxels (:func:`attnseg.training.run.estimated_step_seconds`)."""
    return tuple(min(side, max(multiple, side // 2 // multiple * multiple)) for side in patch_size)


def coarsening_for_budget(seconds: float, step_seconds: float, relative_costs: dict[float, float]) -> float:
    """The smallest in-plane coarsening factor at which :data:`MIN_BUDGET_STEPS` steps fit in ``seconds``.

    ``step_seconds`` is a measured step's time; ``relative_costs`` maps each candidate factor to its
    step's cost relative to the measured one (the ratio of the slices' pixels). The coarsest factor when
    none gives enough steps."""
    factors = sorted(relative_costs)
    for factor in factors:
        if seconds / (step_seconds * FIRST_GUESS_MARGIN * relative_costs[factor]) >= MIN_BUDGET_STEPS:
            return factor
    return factors[-1]


def epochs_that_fit(remaining: float, cost: EpochCost, val_every: int) -> int:
    """How many more epochs fit in ``remaining`` seconds, validating every ``val_every`` epochs and after
    the last one."""
    epochs = 0
    while True:
        candidate = epochs + 1
        validations = candidate // val_every + (0 if candidate % val_every == 0 else 1)
        needed = candidate * (cost.train + cost.writing) + validations * cost.validation
        if needed > remaining:
            return epochs
        epochs = candidate


def shorter_epochs(available: float, cost: EpochCost, iterations: int, val_every: int) -> tuple[int, EpochCost]:
    """Steps per epoch for at least :data:`MIN_EPOCHS` epochs when whole epochs would not fit that many
    (a slow machine, a short budget); ``iterations`` and ``cost`` unchanged when they do."""
    if epochs_that_fit(available, cost, val_every) >= MIN_EPOCHS:
        return iterations, cost
    step = cost.train / iterations
    validations = math.ceil(MIN_EPOCHS / val_every)
    room = available - MIN_EPOCHS * cost.writing - validations * cost.validation
    shorter = max(1, min(iterations, int(room / (MIN_EPOCHS * step)))) if room > 0 else 1
    return shorter, EpochCost(step * shorter, cost.validation, cost.writing)


def spaced_validation(cost: EpochCost, val_every: int, fixed: bool) -> int:
    """``val_every``, widened so that validation takes at most :data:`VALIDATION_SHARE` of the time."""
    if fixed or cost.validation <= 0 or cost.train <= 0:
        return val_every
    return max(val_every, math.ceil(cost.validation / (VALIDATION_SHARE * cost.train)))
