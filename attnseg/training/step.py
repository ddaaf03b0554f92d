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

from attnseg.runtime import Runtime, fastest, runtime_candidates
from attnseg.training.config import Config
from attnseg.training.optim import build_optimizer


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
        with self.runtime.autocast():
            return self.loss_fn(self.model(self.runtime.prepare_input(image)), label)

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
    config: Config, model: nn.Module, loss_fn: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
) -> Runtime:
    """The runtime ``attnseg train`` uses: ``training.layout`` and ``training.amp`` when set, else
    the fastest candidate on ``batch`` (see :mod:`attnseg.runtime`); ``model`` is on ``device``."""
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
    return fastest(candidates, step_runner(config, model, loss_fn, image, label), device)
