"""Optimisers and learning-rate schedules from the configuration (stepped once per epoch)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from attnseg.training.config import OptimizerConfig, SchedulerConfig


def build_optimizer(config: OptimizerConfig, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if config.name == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        parameters,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


def lr_factor(config: SchedulerConfig, epoch: int, epochs: int, base_lr: float) -> float:
    """Multiplier of the base learning rate for ``epoch`` (0-based) of ``epochs``."""
    progress = min(epoch / epochs, 1.0)
    if config.name == "poly":
        return (1 - progress) ** config.power
    if config.name == "step":
        return config.gamma ** (epoch // config.step_size)
    if config.name == "cosine":
        floor = config.min_lr / base_lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def build_scheduler(
    config: SchedulerConfig, optimizer: torch.optim.Optimizer, epochs: int | Callable[[], int]
) -> torch.optim.lr_scheduler.LambdaLR:
    """``epochs`` may be a callable: a run planned within a time budget changes its length as it goes."""
    base_lr = optimizer.param_groups[0]["lr"]
    total = epochs if callable(epochs) else (lambda: epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(config, epoch, total(), base_lr))
