"""Keep part of a network fixed while the rest trains (``attnseg train --freeze encoder``).

Frozen parameters get ``requires_grad=False``: no gradient, so the optimizer skips them (weight decay
included). Their normalisation layers run in evaluation mode, so running statistics stay the
source's too: a frozen tensor is unchanged, buffers included. ``freeze_epochs`` releases the freeze
after that many epochs (the usual two-phase fine-tuning: a new head first, then everything).

An encoder tensor the source could not give (the first convolution over another number of input
channels) is random: frozen, it would stay random for the run. Such tensors (``keep``) stay trainable,
and a normalisation layer holding one keeps updating its statistics.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

from attnseg.errors import ConfigError

# The names under which the registry's networks keep their encoder.
ENCODER_MODULES = ("encoder", "backbone")


def encoder_module(model: nn.Module) -> nn.Module:
    """The encoder of a registered network (``encoder`` of the U-Nets, ``backbone`` of the guided net)."""
    for name in ENCODER_MODULES:
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ConfigError(f"finetune.freeze=encoder: {type(model).__name__} has no {' or '.join(ENCODER_MODULES)} module")


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by their state-dict names (the names ``init.json`` records)."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _keep_eval(module: nn.Module, _inputs: tuple) -> None:
    module.eval()


class Freezer:
    """Freezes ``part`` of ``model`` now, but for the tensors named in ``keep`` (state-dict names of
    tensors initialised fresh); :meth:`at_epoch` releases it when ``epochs`` have passed."""

    def __init__(self, model: nn.Module, part: str, epochs: int | None = None, keep: Collection[str] = ()) -> None:
        if part != "encoder":
            raise ConfigError(f"finetune.freeze={part!r}: only 'encoder' can be frozen")
        self.module = encoder_module(model)
        self.epochs = epochs
        tensors = state_tensors(model)
        self._keep = {id(tensors[name]) for name in keep if name in tensors}
        self._hooks: list[RemovableHandle] = []
        self.frozen = False
        self._set(True)

    def names(self, model: nn.Module) -> list[str]:
        """The state-dict names of the frozen tensors, as ``model`` spells them."""
        ids = {id(t) for t in [*self.module.parameters(), *self.module.buffers()]} - self._keep
        return [name for name, tensor in state_tensors(model).items() if id(tensor) in ids]

    def kept_names(self, model: nn.Module) -> list[str]:
        """The state-dict names of the part's tensors left trainable because they start fresh."""
        ids = {id(t) for t in [*self.module.parameters(), *self.module.buffers()]} & self._keep
        return [name for name, tensor in state_tensors(model).items() if id(tensor) in ids]

    def at_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based): releases the freeze at epoch ``epochs``."""
        if self.frozen and self.epochs is not None and epoch >= self.epochs:
            self._set(False)
            print(f"finetune: encoder released after {self.epochs} frozen epoch(s)", flush=True)

    def _set(self, frozen: bool) -> None:
        for parameter in self.module.parameters():
            parameter.requires_grad_(not frozen or id(parameter) in self._keep)
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        if frozen:
            norms = [m for m in self.module.modules() if isinstance(m, _BatchNorm) and not self._holds_kept(m)]
            self._hooks = [m.register_forward_pre_hook(_keep_eval) for m in norms]
        self.frozen = frozen

    def _holds_kept(self, module: nn.Module) -> bool:
        return any(id(t) in self._keep for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)])
