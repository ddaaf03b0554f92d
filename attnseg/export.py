"""Export an eval-mode network to ONNX or TorchScript, check parity with eager PyTorch, write the JSON sidecar.

Works for any ``nn.Module`` whose eval-mode ``forward(x)`` returns one tensor (the U-Net family and the
multi-scale guided network return plain logits in eval mode).

**Exporters.** ONNX goes through the ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``,
the default since torch 2.9; it needs ``onnxscript``). The legacy TorchScript-based ONNX exporter is
deprecated, and it records the networks' "pad only if needed" branch as a constant, so an ONNX file from
it silently gives wrong logits at any size the example did not have; ``torch.export`` instead keeps the
sizes symbolic or refuses. TorchScript is written with ``torch.jit.trace`` (``torch.jit.script`` cannot
compile the networks' Python), which torch also marks deprecated but still ships; its warnings are
silenced here because we handle their cause, described next.

**Sizes.** Both formats take any batch size. The networks pad their input internally to a multiple of
``2**levels`` (``model.size_multiple``) and crop the output back. A trace freezes that Python branch, so
for dynamic spatial sizes the network is wrapped in :class:`PadToMultiple`, which pads and crops with
shape arithmetic that stays symbolic (ONNX) or is compiled (TorchScript, where the wrapper is scripted
around the traced network): the exported model then accepts any spatial size, as the eager network does.
With ``dynamic_spatial=False`` the ONNX input has the example's fixed spatial size (onnxruntime rejects
others) and the TorchScript module raises on any other size.

**Parity.** :func:`onnx_parity` runs the file in onnxruntime (CPU) and :func:`torchscript_parity` in
torch, and compare with the eager model on the same inputs: the largest absolute difference of the
logits, to pass within :data:`PARITY_TOLERANCE` (1e-4).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import attnseg
from attnseg.errors import AttnsegError, ConfigError
from attnseg.fileio import atomic_path, check_writable, write_json

PARITY_TOLERANCE = 1e-4
SIDECAR_SCHEMA = "attnseg.export/1"
Format = Literal["onnx", "torchscript"]


class PadToMultiple(nn.Module):
    """Zero-pad the spatial axes at their far end to a multiple of ``multiple``, run ``network``, crop back.

    The same padding the networks do internally (far end, zeros), written so that it survives export:
    no Python branch on the size, only shape arithmetic, which ``torch.export`` keeps symbolic and
    ``torch.jit.script`` compiles. Eager results are identical to the bare network's.
    """

    def __init__(self, network: nn.Module, multiple: int) -> None:
        super().__init__()
        self.network = network
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.dim() - 2
        pads: list[int] = []
        for i in range(spatial):  # F.pad lists the last axis first
            size = x.shape[x.dim() - 1 - i]
            pads.append(0)
            pads.append((self.multiple - size % self.multiple) % self.multiple)
        y = self.network(F.pad(x, pads))
        for i in range(spatial):
            y = y.narrow(2 + i, 0, x.shape[2 + i])
        return y


class FixedSpatialSize(nn.Module):
    """Run ``network`` only on inputs of the spatial size it was traced at; any other size raises."""

    def __init__(self, network: nn.Module, size: Sequence[int]) -> None:
        super().__init__()
        self.network = network
        self.size = [int(s) for s in size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if list(x.shape[2:]) != self.size:
            raise RuntimeError(f"this exported model takes spatial size {self.size}, got {list(x.shape[2:])}")
        return self.network(x)


@dataclass(frozen=True)
class ExportResult:
    """What was written and what the exported model accepts."""

    path: Path
    format: Format
    input_name: str
    output_name: str
    example_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dynamic_batch: bool
    dynamic_spatial: bool
    spatial_multiple: int | None

    def io_spec(self) -> dict[str, dict[str, Any]]:
        """The sidecar's ``input`` and ``output`` entries (see :func:`sidecar_dict`)."""
        spatial_dims = len(self.example_shape) - 2
        layout = "BC" + "XYZ"[:spatial_dims]
        return {
            "input": {
                "name": self.input_name,
                "layout": layout,
                "channels": self.example_shape[1],
                "dtype": "float32",
                "example_shape": list(self.example_shape),
                "dynamic_batch": self.dynamic_batch,
                "dynamic_spatial": self.dynamic_spatial,
                "spatial_multiple": self.spatial_multiple,
            },
            "output": {
                "name": self.output_name,
                "layout": "BK" + "XYZ"[:spatial_dims],
                "classes": self.output_shape[1],
                "kind": "logits",
            },
        }


@dataclass(frozen=True)
class ParityResult:
    """Largest absolute difference between the exported model's and the eager model's outputs."""

    format: Format
    max_abs_diff: float
    tolerance: float
    input_shapes: list[tuple[int, ...]]

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_shapes"] = [list(s) for s in self.input_shapes]
        out["passed"] = self.passed
        return out


# ---------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The eval-mode output of ``model`` on ``x``; a ConfigError unless it is one tensor."""
    with _eval_mode(model), torch.no_grad():
        out = model(x.to(_device(model)))
    if not isinstance(out, torch.Tensor):
        raise ConfigError(
            f"{type(model).__name__} returns {type(out).__name__} in eval mode; export needs a network whose "
            "eval-mode forward returns one tensor"
        )
    return out


def _check_example(example_input: torch.Tensor) -> torch.Tensor:
    if not isinstance(example_input, torch.Tensor) or example_input.dim() not in (4, 5):
        shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input)
        raise ConfigError(f"the example input must be a (batch, channels, X, Y[, Z]) tensor, got {shape}")
    return example_input.detach().float()


def _resolve_spatial(
    model: nn.Module, dynamic_spatial: bool | None, spatial_multiple: int | None
) -> tuple[bool, int | None]:
    """Decide dynamic spatial sizes and the padding multiple (from ``model.size_multiple`` if not given)."""
    multiple = spatial_multiple if spatial_multiple is not None else getattr(model, "size_multiple", None)
    if multiple is not None and (not isinstance(multiple, int) or multiple < 1):
        raise ConfigError(f"spatial_multiple must be a positive integer, got {multiple!r}")
    if dynamic_spatial is None:
        dynamic_spatial = multiple is not None
    if dynamic_spatial and multiple is None:
        raise ConfigError(
            f"{type(model).__name__} has no size_multiple: pass spatial_multiple (1 if it takes any size) "
            "or dynamic_spatial=False"
        )
    return bool(dynamic_spatial), multiple if dynamic_spatial else None


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"export needs the optional package(s) {', '.join(missing)}: pip install 'attnseg[export]'")


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporters' chatter: known deprecations, trace warnings whose cause we handle, progress logs."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+.* is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


# Terminal colour codes, which torch's ONNX exporter puts in its messages.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# How many of an error's chained causes the one-line message quotes.
_CAUSES_QUOTED = 2
# What `attnseg export` offers when ONNX fails: the formats that trace the network rather than export it.
ONNX_ALTERNATIVES = "--format torchscript or --format monai-bundle export it at any size (docs/export.md)"


def _first_line(error: BaseException) -> str:
    text = _ANSI_ESCAPE.sub("", str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _failure_reason(error: BaseException) -> str:
    """The error's first line and those of its first chained causes: torch's ONNX exporter wraps every
    failure in an error whose first line says only that step 1/3 failed; the reason is in its cause."""
    parts = [_first_line(error).removesuffix("Next steps:").strip()]
    cause = error.__cause__
    while cause is not None and len(parts) <= _CAUSES_QUOTED:
        parts.append(f"{type(cause).__name__}: {_first_line(cause)}")
        cause = cause.__cause__
    return " <- ".join(parts)


def _failure_message(exporter: str, model: nn.Module, error: BaseException, hint: str = "") -> str:
    return f"{exporter} of {type(model).__name__} failed: {_failure_reason(error)}{hint}"


@contextlib.contextmanager
def _export_failure(exporter: str, model: nn.Module, hint: str = "") -> Iterator[None]:
    """An exporter's failure becomes one AttnsegError naming the network, the first lines of the error and
    its causes, and ``hint`` (the cause is chained): the exporters' messages run to pages of traces."""
    try:
        yield
    except Exception as error:
        raise AttnsegError(_failure_message(exporter, model, error, hint)) from error


def _onnx_dynamic() -> Any:
    """``torch.export.Dim.DYNAMIC``, after checking what ONNX export needs: onnx, onnxscript, torch>=2.6."""
    _require("onnx", "onnxscript")
    from torch.export import Dim

    if not hasattr(Dim, "DYNAMIC"):
        raise ConfigError(f"ONNX export needs torch>=2.6 (torch.export.Dim.DYNAMIC); this is torch {torch.__version__}")
    return Dim.DYNAMIC


def _onnx_trace_shapes(
    x: torch.Tensor, dynamic_batch: bool, dynamic_spatial: bool, dynamic: Any
) -> tuple[torch.Tensor, dict[int, Any]]:
    """The example to trace and its axes that stay ``dynamic``. torch.export specialises sizes 0 and 1, so a
    dynamic axis needs an example size of at least 2: a batch of one is traced as two."""
    trace_input = x.expand(2, *x.shape[1:]).contiguous() if dynamic_batch and x.shape[0] == 1 else x
    dims: dict[int, Any] = {0: dynamic} if dynamic_batch else {}
    if dynamic_spatial:
        dims.update({axis: dynamic for axis in range(2, x.dim())})
    return trace_input, dims


# ---------------------------------------------------------------------------------------------- export


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    dynamic_spatial: bool | None = None,
    spatial_multiple: int | None = None,
    overwrite: bool = False,
    input_name: str = "image",
    output_name: str = "logits",
    opset_version: int | None = None,
) -> ExportResult:
    """Export ``model`` (in eval mode) to an ONNX file with ``torch.onnx.export(dynamo=True)``.

    Args:
        model: a network whose eval-mode ``forward(x)`` returns one tensor; its train/eval mode is
            restored afterwards.
        example_input: a ``(B, C, X, Y[, Z])`` tensor of the size the model expects.
        path: the ``.onnx`` file to write (atomically); its folder is created.
        dynamic_batch: accept any batch size.
        dynamic_spatial: accept any spatial size. Default: yes when a padding multiple is known
            (``model.size_multiple`` or ``spatial_multiple``), else the example's size only.
        spatial_multiple: the multiple the network pads to; default ``model.size_multiple``.
        overwrite: replace an existing file.
        input_name, output_name: the ONNX graph's input and output names.
        opset_version: ONNX opset; default: the exporter's.

    Raises:
        ConfigError: the file exists, the packages are missing, or the model does not return a tensor.
        AttnsegError: the exporter failed (its first line; the cause is chained).
    """
    dynamic = _onnx_dynamic()
    x = _check_example(example_input)
    check_writable(path, overwrite)
    dynamic_spatial, multiple = _resolve_spatial(model, dynamic_spatial, spatial_multiple)
    output = _eager(model, x)
    trace_input, dims = _onnx_trace_shapes(x, dynamic_batch, dynamic_spatial, dynamic)
    failure = _export_failure("ONNX export", model, "; try dynamic_spatial=False" if dynamic_spatial else "")
    with _eval_mode(model), atomic_path(path, overwrite) as temporary, _quiet_export(), failure:
        network = PadToMultiple(model, multiple).eval() if dynamic_spatial and multiple and multiple > 1 else model
        torch.onnx.export(
            network,
            (trace_input.to(_device(model)),),
            str(temporary),
            dynamo=True,
            dynamic_shapes=(dims,) if dims else None,
            input_names=[input_name],
            output_names=[output_name],
            opset_version=opset_version,
            external_data=False,
            verbose=False,
        )
    return ExportResult(
        Path(path), "onnx", input_name, output_name, tuple(x.shape), tuple(output.shape), dynamic_batch,
        dynamic_spatial, multiple,
    )  # fmt: skip


def export_torchscript(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    dynamic_spatial: bool | None = None,
    spatial_multiple: int | None = None,
    overwrite: bool = False,
    input_name: str = "image",
    output_name: str = "logits",
) -> ExportResult:
    """Export ``model`` (in eval mode) to a TorchScript file (``torch.jit.trace``, saved with ``torch.jit.save``).

    Any batch size works (convolutions do not depend on it). With dynamic spatial sizes the traced
    network is run inside a scripted :class:`PadToMultiple`; without, inside a scripted
    :class:`FixedSpatialSize` that raises on any other size. Arguments as :func:`export_onnx`; the names
    are only recorded (a TorchScript module is called positionally).
    """
    x = _check_example(example_input)
    check_writable(path, overwrite)
    dynamic_spatial, multiple = _resolve_spatial(model, dynamic_spatial, spatial_multiple)
    output = _eager(model, x)
    with _eval_mode(model), torch.no_grad(), _quiet_export(), _export_failure("TorchScript export", model):
        if dynamic_spatial and multiple:
            padded = PadToMultiple(nn.Identity(), multiple)(x).to(_device(model))
            wrapper: nn.Module = PadToMultiple(torch.jit.trace(model, padded), multiple)
        else:
            wrapper = FixedSpatialSize(torch.jit.trace(model, x.to(_device(model))), x.shape[2:])
        module = torch.jit.script(wrapper.eval())
    with atomic_path(path, overwrite) as temporary, _quiet_export():
        torch.jit.save(module, str(temporary))
    return ExportResult(
        Path(path), "torchscript", input_name, output_name, tuple(x.shape), tuple(output.shape), True, dynamic_spatial,
        multiple,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- parity


def parity_inputs(
    example_input: torch.Tensor,
    dynamic_batch: bool = True,
    dynamic_spatial: bool = False,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Inputs for a parity check: the example, and random ones with another batch size and spatial size.

    The batch variant has one more sample; the spatial variant adds 3 voxels to every spatial axis (an
    odd change, so that the internal padding differs from the example's).
    """
    x = _check_example(example_input)
    generator = torch.Generator().manual_seed(seed)
    inputs = [x]
    if dynamic_batch:
        inputs.append(torch.randn((x.shape[0] + 1, *x.shape[1:]), generator=generator))
    if dynamic_spatial:
        inputs.append(torch.randn((1, x.shape[1], *(s + 3 for s in x.shape[2:])), generator=generator))
    return inputs


def _max_abs_diff(reference: torch.Tensor, exported: np.ndarray | torch.Tensor) -> float:
    exported = torch.as_tensor(np.asarray(exported) if not isinstance(exported, torch.Tensor) else exported)
    reference = reference.detach().cpu().float()
    if tuple(exported.shape) != tuple(reference.shape):
        return float("inf")
    return float((exported.cpu().float() - reference).abs().max())


def _compare(
    fmt: Format,
    model: nn.Module,
    path: str | os.PathLike[str],
    inputs: Sequence[torch.Tensor],
    tolerance: float,
    run: Callable[[torch.Tensor], np.ndarray | torch.Tensor],
) -> ParityResult:
    """Run the exported model on each input and compare with the eager model; errors name file and shape."""
    worst = 0.0
    for x in inputs:
        try:
            out = run(x)
        except Exception as error:
            # onnxruntime's message is its first line; a TorchScript error is a traceback ending in the message.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
            message = lines[-1] if fmt == "torchscript" else lines[0]
            raise AttnsegError(f"{path}: the {fmt} model failed on shape {tuple(x.shape)}: {message}") from error
        worst = max(worst, _max_abs_diff(_eager(model, x), out))
    return ParityResult(fmt, worst, tolerance, [tuple(x.shape) for x in inputs])


def onnx_parity(
    model: nn.Module,
    path: str | os.PathLike[str],
    inputs: Sequence[torch.Tensor],
    tolerance: float = PARITY_TOLERANCE,
) -> ParityResult:
    """Run the ONNX file in onnxruntime (CPU) on each input and compare with the eager model."""
    _require("onnxruntime")
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:
        raise AttnsegError(f"{path}: onnxruntime cannot load it: {_first_line(error)}") from error
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {input_name: x.detach().cpu().float().numpy()})[0]

    return _compare("onnx", model, path, inputs, tolerance, run)


def torchscript_parity(
    model: nn.Module,
    path: str | os.PathLike[str],
    inputs: Sequence[torch.Tensor],
    tolerance: float = PARITY_TOLERANCE,
) -> ParityResult:
    """Load the TorchScript file (one we wrote: loading runs its code) and compare with the eager model."""
    device = _device(model)
    with _quiet_export():
        module = torch.jit.load(str(path), map_location=device)
    module.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x.to(device))

    return _compare("torchscript", model, path, inputs, tolerance, run)


# ---------------------------------------------------------------------------------------------- sidecar

SIDECAR_REQUIRED = (
    "schema",
    "format",
    "model_file",
    "spatial_dims",
    "input",
    "output",
    "labels",
    "spacing",
    "normalisation",
    "patch_size",
)


def sidecar_path(model_path: str | os.PathLike[str]) -> Path:
    """Where the sidecar of an exported model goes: ``model.onnx`` -> ``model.onnx.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def sidecar_dict(
    result: ExportResult,
    *,
    labels: Mapping[str, int],
    spacing: Sequence[float],
    normalisation: Mapping[str, Any],
    patch_size: Sequence[int],
    slice_axis: int | None = None,
    network: str | None = None,
    parity: ParityResult | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The sidecar for an export: its format and I/O from ``result``, the preprocessing from the caller.

    Args:
        result: what :func:`export_onnx` or :func:`export_torchscript` returned.
        labels: class name -> output channel / label value, e.g. ``{"background": 0, "liver": 1}``.
        spacing: the voxel size in mm the model expects, one per input spatial axis (None: any, the
            plan keeps that axis as it is).
        normalisation: the intensity normalisation the model expects, as the Plan stores it, e.g.
            ``{"scheme": "zscore", "mean": 102.3, "std": 57.1}``.
        patch_size: the spatial size the model was trained on (3D: the sliding-window patch; 2D: the slice).
        slice_axis: 2D models: the axis of the (preprocessed) volume that is sliced; ``None`` for 3D.
        network: the registry name, e.g. ``"attention_unet"``.
        parity: the parity result to record.
        **extra: any further keys (e.g. ``"config"``), stored as given.
    """
    spatial_dims = len(result.example_shape) - 2
    return {
        "schema": SIDECAR_SCHEMA,
        "format": result.format,
        "model_file": result.path.name,
        "attnseg_version": attnseg.__version__,
        "torch_version": torch.__version__,
        "network": network,
        "spatial_dims": spatial_dims,
        **result.io_spec(),
        "labels": {str(k): int(v) for k, v in labels.items()},
        "spacing": [None if s is None else float(s) for s in spacing],
        "normalisation": dict(normalisation),
        "patch_size": [int(s) for s in patch_size],
        "slice_axis": slice_axis,
        "parity": parity.as_dict() if parity is not None else None,
        **extra,
    }


def _check_sidecar(sidecar: Mapping[str, Any]) -> None:
    missing = [key for key in SIDECAR_REQUIRED if key not in sidecar]
    if missing:
        raise ConfigError(f"the export sidecar lacks {', '.join(missing)}")
    dims = sidecar["spatial_dims"]
    problems = {
        "schema": sidecar["schema"] == SIDECAR_SCHEMA,
        "format": sidecar["format"] in ("onnx", "torchscript"),
        "model_file": isinstance(sidecar["model_file"], str) and bool(sidecar["model_file"]),
        "spatial_dims": dims in (2, 3),
        "input": isinstance(sidecar["input"], Mapping) and {"name", "layout"} <= set(sidecar["input"]),
        "output": isinstance(sidecar["output"], Mapping) and {"name", "layout"} <= set(sidecar["output"]),
        "labels": isinstance(sidecar["labels"], Mapping)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in sidecar["labels"].values()),
        "spacing": isinstance(sidecar["spacing"], Sequence)
        and len(sidecar["spacing"]) == dims
        and all(s is None or (isinstance(s, (int, float)) and s > 0) for s in sidecar["spacing"]),
        "normalisation": isinstance(sidecar["normalisation"], Mapping),
        "patch_size": isinstance(sidecar["patch_size"], Sequence)
        and len(sidecar["patch_size"]) == dims
        and all(isinstance(s, int) and s > 0 for s in sidecar["patch_size"]),
    }
    wrong = [key for key, ok in problems.items() if not ok]
    if wrong:
        raise ConfigError(
            f"the export sidecar has invalid {', '.join(wrong)} (schema {SIDECAR_SCHEMA}; see docs/export.md)"
        )


def write_sidecar(path: str | os.PathLike[str], sidecar: Mapping[str, Any], overwrite: bool = False) -> Path:
    """Validate ``sidecar`` against the schema and write it as strict JSON (no NaN) atomically."""
    _check_sidecar(sidecar)
    try:
        return write_json(path, dict(sidecar), overwrite=overwrite, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the export sidecar is not plain JSON: {_first_line(error)}") from error


# ---------------------------------------------------------------------------------------------- model dirs

EXPORT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


@dataclass
class ModelDirExport:
    model_file: Path
    sidecar_file: Path
    parity: ParityResult


def export_model_dir(
    model_dir: str | os.PathLike[str],
    fmt: str,
    output: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> ModelDirExport:
    """Export the network of a model directory, check parity with the eager model, write the sidecar.

    The example input is one patch (3D) or slice (2D) of the plan's size; batch and spatial sizes stay
    dynamic. The sidecar records what a deployment must reproduce: labels, the network's voxel size,
    normalisation, patch/slice size and slicing axis, input/output layout, and the parity result.
    """
    from attnseg.model_dir import ModelDir

    if fmt not in EXPORT_SUFFIXES:
        raise ConfigError(f"export format must be one of {', '.join(EXPORT_SUFFIXES)}, got {fmt!r}")
    directory = ModelDir(model_dir)
    plan = directory.load_plan()
    network = directory.build_network(weights=True)
    path = Path(output) if output is not None else directory.path / f"model{EXPORT_SUFFIXES[fmt]}"
    side = sidecar_path(path)
    check_writable(side, overwrite)
    example = torch.randn(1, plan.num_channels, *plan.patch_size)
    exporter = export_onnx if fmt == "onnx" else export_torchscript
    try:
        result = exporter(network, example, path, overwrite=overwrite)
    except AttnsegError as error:
        if fmt != "onnx" or error.__cause__ is None:
            raise
        # export_onnx's hint names its Python argument; here the user has the command line's formats.
        raise AttnsegError(
            _failure_message("ONNX export", network, error.__cause__, f"; {ONNX_ALTERNATIVES}")
        ) from error.__cause__
    checker = onnx_parity if fmt == "onnx" else torchscript_parity
    parity = checker(network, path, parity_inputs(example, dynamic_batch=True, dynamic_spatial=result.dynamic_spatial))
    in_plane = [s for axis, s in enumerate(plan.target_spacing) if axis != plan.slice_axis]
    sidecar = sidecar_dict(
        result,
        labels=plan.labels,
        spacing=in_plane[: plan.spatial_dims],  # None: an axis the plan does not resample
        normalisation={"channels": [asdict(n) for n in plan.normalization], "channel_names": plan.channel_names},
        patch_size=plan.patch_size,
        slice_axis=plan.slice_axis,
        network=directory.network_spec()["name"],
        parity=parity,
        plan=plan.to_dict(),
        class_values=list(plan.class_values),
        orientation=plan.orientation,  # the input's X, Y, Z: the volume reoriented to this voxel order
    )
    write_sidecar(side, sidecar, overwrite=overwrite)
    return ModelDirExport(path, side, parity)
