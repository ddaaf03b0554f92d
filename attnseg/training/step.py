"""One training step exactly as ``attnseg train`` runs it, and the measured choice of its runtime.

The Trainer, the runtime measurement at the start of a run and ``attnseg profile --train`` all run
this same step: the batch in the runtime's memory layout, forward and loss under its autocast,
(scaled) backward, gradient clipping, optimizer step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from attnseg.errors import ConfigError
from attnseg.runtime import Runtime, fastest, runtime_candidates
from attnseg.timing import time_call
from attnseg.training.budget import RUNTIME_TIMING_SHARE, TimeBudget, format_duration, refuse_if_short
from attnseg.training.config import Config
from attnseg.training.optim import build_optimizer

# torch's batch norm, training on one value per channel (a batch of 1 whose deepest map is one voxel)
_BATCH_NORM_ONE_VALUE = "Expected more than 1 value per channel when training"


class TrainStep:
    """Forward, loss, backward and update of ``model`` under ``runtime``.

    ``model`` must already be in the runtime's layout (``runtime.prepare_model``), and may be wrapped
    in DistributedDataParallel. The fp16 gradient scaler lives here (``scaler``; the Trainer
    checkpoints it).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        runtime: Runtime,
        grad_clip: float | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.runtime = runtime
        self.grad_clip = grad_clip
        self.scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp == "fp16")

    def forward_loss(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        try:
            with self.runtime.autocast():
                return self.loss_fn(self.model(self.runtime.prepare_input(image)), label)
        except ValueError as error:
            if _BATCH_NORM_ONE_VALUE not in str(error):
                raise
            raise ConfigError(
                f"a training step on a batch of {tuple(image.shape)}: the network's deepest feature map is one "
                f"voxel per channel here, and batch normalisation needs more than one value per channel to "
                f"train ({error}); use a batch of 2 or more (data.batch_size, or --batch for attnseg profile) or "
                "a larger patch (data.patch_size, --size)"
            ) from error

    def update(self, loss: torch.Tensor) -> None:
        """Backward from ``loss`` and one optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        loss = self.forward_loss(image, label)
        self.update(loss)
        return loss


def random_batch(input_shape: tuple[int, ...], classes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """An image of ``input_shape`` (B, C, *S) and labels (B, *S) in ``0..classes-1``, for timing a step
    (its speed does not depend on the values)."""
    image = torch.randn(input_shape, device=device)
    label = torch.randint(0, classes, (input_shape[0], *input_shape[2:]), device=device)
    return image, label


def step_runner(
    config: Config, model: nn.Module, loss_fn: nn.Module, image: torch.Tensor, label: torch.Tensor
) -> Callable[[Runtime], Callable[[], object]]:
    """For a runtime, a function running one training step of a fresh copy of ``model`` (with its own
    optimizer, so the real model's weights and batch-norm statistics are not touched)."""

    def runner(runtime: Runtime) -> Callable[[], object]:
        network = runtime.prepare_model(copy.deepcopy(model)).train()
        optimizer = build_optimizer(config.optimizer, network.parameters())
        step = TrainStep(network, loss_fn, optimizer, runtime, config.training.grad_clip)
        return lambda: step(image, label)

    return runner


def choose_runtime(
    config: Config,
    model: nn.Module,
    loss_fn: nn.Module,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    budget: TimeBudget | None = None,
) -> Runtime:
    """The runtime ``attnseg train`` uses: ``training.layout`` and ``training.amp`` when set, else
    the fastest candidate on ``batch`` (see :mod:`attnseg.runtime`); ``model`` is on ``device``.

    With a time ``budget`` the candidates are timed only when that costs at most
    :data:`~attnseg.training.budget.RUNTIME_TIMING_SHARE` of it (estimated from one step of the first
    candidate): a large 3D step on a CPU could otherwise spend the whole budget choosing how to run."""
    training = config.training
    candidates = runtime_candidates(device, training.layout, training.amp)
    if len(candidates) == 1:
        return replace(candidates[0], reason=f"set: training.layout={training.layout}, training.amp={training.amp}")
    if training.deterministic:
        return replace(
            candidates[0], reason="training.deterministic: the default candidate, not measured (timings vary by run)"
        )
    image = batch["image"].to(device)
    label = batch["label"].to(device)
    runner = step_runner(config, model, loss_fn, image, label)
    if budget is not None:
        untimed = _too_costly_to_time(candidates, runner, device, budget)
        if untimed is not None:
            return untimed
    return fastest(candidates, runner, device)


# calls :func:`attnseg.runtime.fastest` makes of each candidate: one warm-up and three timed rounds
TIMED_CALLS_PER_CANDIDATE = 4


def _too_costly_to_time(
    candidates: list[Runtime],
    runner: Callable[[Runtime], Callable[[], object]],
    device: torch.device,
    budget: TimeBudget,
) -> Runtime | None:
    """The default candidate, with the reason, when timing every candidate would cost more than
    RUNTIME_TIMING_SHARE of ``budget``; None when timing them is worth it. One step of the default
    candidate, on the budget's clock, is the estimate; a step that alone does not fit in what is left of
    the budget refuses it there (ConfigError), before any more steps are spent."""
    first = runner(candidates[0])
    step = time_call(first, repeats=1, warmup=0, device=device, clock=budget.clock)
    refuse_if_short(budget, step, "one training step (timed while choosing the runtime)")
    cost = step * TIMED_CALLS_PER_CANDIDATE * len(candidates)
    if cost <= RUNTIME_TIMING_SHARE * budget.seconds:
        return None
    reason = (
        f"time budget {format_duration(budget.seconds)}: timing {len(candidates)} candidates would take "
        f"~{format_duration(cost)} (a step of {step:.2f} s), more than {RUNTIME_TIMING_SHARE:.0%} of the budget; "
        "the default candidate, not measured"
    )
    return replace(candidates[0], reason=reason, step_ms={candidates[0].name: round(step * 1000, 2)})
