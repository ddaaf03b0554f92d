"""Start a training from another model's weights (``attnseg train --init-from``).

Fine-tuning is worth most when the new task differs from the source's: other classes, other input
channels. So the match is by tensor name *and* shape: every tensor of the new network whose name and
shape the source has is copied; the rest (the output heads of another number of classes, a first
convolution over other channels) keeps its fresh initialisation. What was loaded and what was not is
printed and recorded as ``init.json`` in the model directory, so a result can be traced to its start.

Weights are never unpickled: a model directory's or a ``.safetensors`` file is read with safetensors,
a ``.pt``/``.pth`` file with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from attnseg.data.plan import Plan
from attnseg.errors import ConfigError
from attnseg.model_dir import ModelDir

INIT_FILE = "init.json"


@dataclass
class InitRecord:
    """What ``--init-from`` did: the source, the tensors loaded, and those left fresh (with why)."""

    source: str
    source_sha256: str
    loaded: list[str] = field(default_factory=list)
    fresh: dict[str, str] = field(default_factory=dict)  # name -> why it was not loaded
    unused: list[str] = field(default_factory=list)  # source tensors the new network has no place for

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        lines = [f"init-from {self.source}: {len(self.loaded)} tensor(s) loaded, {len(self.fresh)} initialised fresh"]
        lines += [f"  fresh: {name} ({why})" for name, why in self.fresh.items()]
        if self.unused:
            lines.append(f"  {len(self.unused)} source tensor(s) unused: {', '.join(self.unused[:8])}")
        return "\n".join(lines)


def weights_file(source: Path) -> Path:
    """The weights file of ``source``: a model directory's weights.safetensors, or the file itself."""
    path = ModelDir(source).file(ModelDir.WEIGHTS) if source.is_dir() else source
    if not path.is_file():
        raise ConfigError(f"finetune.init_from: {path} does not exist; give a model directory or a weights file")
    return path


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; a ``.pt`` resume checkpoint's ``model`` entry is accepted too."""
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and torch raise several types for a damaged file
        raise ConfigError(f"finetune.init_from: cannot read the weights in {path} ({error})") from error
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"finetune.init_from: {path} holds no state dict of tensors")
    return state


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_matching(model: nn.Module, source: Path) -> InitRecord:
    """Copy into ``model`` every tensor of ``source`` whose name and shape match; return the record."""
    path = weights_file(Path(source))
    state = read_state(path)
    record = InitRecord(source=str(source), source_sha256=file_sha256(path))
    own = model.state_dict()
    matched = {}
    for name, tensor in own.items():
        if name not in state:
            record.fresh[name] = "not in the source"
        elif state[name].shape != tensor.shape:
            record.fresh[name] = f"shape {tuple(state[name].shape)} in the source, {tuple(tensor.shape)} here"
        else:
            matched[name] = state[name].to(tensor.dtype)
            record.loaded.append(name)
    record.unused = [name for name in state if name not in own]
    if not matched:
        raise ConfigError(f"finetune.init_from: no tensor of {path} fits this network (names or shapes differ)")
    if not any(tensor.dim() > 1 for tensor in matched.values()):
        # biases and normalisation vectors alone are no start: the run would be a fresh one in disguise
        raise ConfigError(
            f"finetune.init_from: no weight of {path} fits this network, only {len(matched)} bias and "
            f"normalisation vector(s){_dims_hint(state, own)}; train from scratch or start from a model like this one"
        )
    model.load_state_dict(matched, strict=False)
    return record


def _dims_hint(source: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> str:
    """``: the source is a 2D network, this one 3D`` when their convolution kernels say so, else ''."""

    def dims(state: dict[str, torch.Tensor]) -> set[int]:
        return {t.dim() - 2 for name, t in state.items() if name.endswith("weight") and t.dim() in (4, 5)}

    theirs, ours = dims(source), dims(own)
    if len(theirs) == len(ours) == 1 and theirs != ours:
        return f": the source is a {theirs.pop()}D network, this one {ours.pop()}D"
    return ""


def with_source_plan(plan: Plan, source: Path) -> Plan:
    """``plan`` (the new dataset's) with the source model's target spacing and normalisation, for
    ``finetune.keep_source_plan``: the network then sees intensities and a resolution like those it
    learnt on. Only a model directory has a plan; its channels must be the new dataset's."""
    if not Path(source).is_dir():
        raise ConfigError("finetune.keep_source_plan needs init_from to be a model directory (it holds plan.json)")
    source_plan = ModelDir(source).load_plan()
    if len(source_plan.normalization) != len(plan.normalization):
        raise ConfigError(
            f"finetune.keep_source_plan: the source model has {len(source_plan.normalization)} input channel(s), "
            f"the dataset {len(plan.normalization)}; its normalisation cannot be kept"
        )
    return dataclasses.replace(
        plan, target_spacing=source_plan.target_spacing, normalization=list(source_plan.normalization)
    )
