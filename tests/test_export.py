"""ONNX and TorchScript export: parity with eager PyTorch (tolerance 1e-4), sizes, safety, the sidecar."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from attnseg.errors import AttnsegError, ConfigError, OutputExistsError
from attnseg.export import (
    PARITY_TOLERANCE,
    SIDECAR_SCHEMA,
    export_onnx,
    export_torchscript,
    onnx_parity,
    parity_inputs,
    sidecar_dict,
    sidecar_path,
    torchscript_parity,
    write_sidecar,
)
from attnseg.networks import AttentionUNet, UNet
from attnseg.networks.registry import build_network

SMALL = (4, 8, 16, 32, 64)


@pytest.mark.parametrize(
    ("network", "example_shape"),
    [
        (AttentionUNet, (1, 1, 36, 28)),
        (UNet, (1, 1, 36, 28)),
        (AttentionUNet, (1, 1, 12, 10, 14)),
        (UNet, (1, 1, 12, 10, 14)),
    ],
    ids=["attention_unet_2d", "unet_2d", "attention_unet_3d", "unet_3d"],
)
def test_parity_at_other_batch_and_spatial_sizes(network: type, example_shape: tuple, tmp_path: Path) -> None:
    """Export at a size that is not a multiple of 16; run at another batch size and another odd size."""
    model = network(spatial_dims=len(example_shape) - 2, features=SMALL, out_channels=3)
    model.train()  # the exporters must use eval mode and give the mode back
    example = torch.randn(example_shape)
    inputs = parity_inputs(example, dynamic_batch=True, dynamic_spatial=True)
    assert [tuple(x.shape) for x in inputs][1:] == [
        (2, *example_shape[1:]),
        (1, 1, *(s + 3 for s in example_shape[2:])),
    ]

    onnx_result = export_onnx(model, example, tmp_path / "model.onnx")
    assert model.training
    assert (onnx_result.dynamic_batch, onnx_result.dynamic_spatial, onnx_result.spatial_multiple) == (True, True, 16)
    assert onnx_result.output_shape == (1, 3, *example_shape[2:])
    graph_input = onnx.load(str(onnx_result.path)).graph.input[0]
    assert graph_input.name == "image"
    dims = graph_input.type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1] == 1
    assert all(dims[i].dim_param for i in (0, *range(2, len(example_shape))))  # symbolic batch and spatial axes
    onnx_check = onnx_parity(model, onnx_result.path, inputs)
    assert onnx_check.passed, onnx_check
    assert onnx_check.max_abs_diff <= PARITY_TOLERANCE

    ts_result = export_torchscript(model, example, tmp_path / "model.pt")
    assert model.training
    ts_check = torchscript_parity(model, ts_result.path, inputs)
    assert ts_check.passed and ts_check.max_abs_diff <= PARITY_TOLERANCE
    assert ts_check.input_shapes == [tuple(x.shape) for x in inputs]


def test_guided_network_with_its_memory_check_exports_to_torchscript(tmp_path: Path) -> None:
    """The registered guided network checks its memory before a pass (``memory_limit_gib="auto"``), by a
    functional call that torch.jit cannot trace: the export, and so the MONAI Bundle, failed with "The
    stateless API can't be used with Jitted modules". Traced, the check is skipped and the file agrees."""
    model = build_network("ms_guided_cpu", spatial_dims=2, in_channels=1, out_channels=2)
    assert model.memory_limit_gib == "auto"
    example = torch.randn(1, 1, 36, 28)
    result = export_torchscript(model, example, tmp_path / "model.pt")
    check = torchscript_parity(model, result.path, parity_inputs(example, dynamic_spatial=True))
    assert check.passed, check


def test_fixed_spatial_size_exports_refuse_other_sizes(tmp_path: Path) -> None:
    model = UNet(spatial_dims=2, features=(4, 8, 16), out_channels=2)
    example = torch.randn(1, 1, 20, 20)
    other_size = [torch.randn(1, 1, 24, 20)]

    ts = export_torchscript(model, example, tmp_path / "fixed.pt", dynamic_spatial=False)
    assert not ts.dynamic_spatial and ts.spatial_multiple is None
    assert torchscript_parity(model, ts.path, parity_inputs(example)).passed  # other batch sizes still work
    with pytest.raises(AttnsegError, match=r"takes spatial size \[20, 20\], got \[24, 20\]"):
        torchscript_parity(model, ts.path, other_size)

    onnx_file = export_onnx(model, example, tmp_path / "fixed.onnx", dynamic_spatial=False)
    assert onnx_parity(model, onnx_file.path, parity_inputs(example)).passed
    with pytest.raises(AttnsegError, match=r"the onnx model failed on shape \(1, 1, 24, 20\)"):
        onnx_parity(model, onnx_file.path, other_size)


class PlainConv(nn.Module):
    """A network without ``size_multiple`` (no internal padding), as any user module may be."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_generic_module_without_size_multiple(tmp_path: Path) -> None:
    model, example = PlainConv(), torch.randn(1, 1, 9, 7)
    fixed = export_torchscript(model, example, tmp_path / "fixed.pt")
    assert not fixed.dynamic_spatial  # nothing says it takes other sizes
    with pytest.raises(ConfigError, match="has no size_multiple"):
        export_torchscript(model, example, tmp_path / "any.pt", dynamic_spatial=True)
    free = export_torchscript(model, example, tmp_path / "any.pt", spatial_multiple=1)
    assert free.dynamic_spatial and free.spatial_multiple == 1
    assert torchscript_parity(model, free.path, parity_inputs(example, dynamic_spatial=True)).passed


class ReturnsDict(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.conv(x)}


def test_model_must_return_a_tensor(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="returns dict in eval mode"):
        export_torchscript(ReturnsDict(), torch.randn(1, 1, 4, 4), tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="example input"):
        export_torchscript(PlainConv(), torch.randn(1, 4, 4), tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_no_overwrite_unless_asked_and_atomic(tmp_path: Path) -> None:
    model, example = PlainConv(), torch.randn(1, 1, 6, 6)
    target = tmp_path / "model.pt"
    target.write_text("keep")
    with pytest.raises(OutputExistsError, match="exists; pass overwrite=True"):
        export_torchscript(model, example, target)
    with pytest.raises(OutputExistsError, match="exists; pass overwrite=True"):
        export_onnx(model, example, target)
    assert target.read_text() == "keep"
    export_torchscript(model, example, target, overwrite=True)
    assert torchscript_parity(model, target, [example]).passed
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


class DataDependent(nn.Module):
    """Control flow on tensor values: torch.export cannot export it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


def test_failed_export_is_one_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(AttnsegError, match="ONNX export of DataDependent failed"):
        export_onnx(DataDependent(), torch.randn(1, 1, 4, 4), tmp_path / "m.onnx", dynamic_spatial=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_optional_packages_say_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ConfigError, match=r"onnxscript: pip install 'attnseg\[export\]'"):
        export_onnx(PlainConv(), torch.randn(1, 1, 4, 4), tmp_path / "m.onnx")


# ---------------------------------------------------------------- sidecar


def test_sidecar_round_trip(tmp_path: Path) -> None:
    model, example = UNet(spatial_dims=2, features=(4, 8, 16), out_channels=3), torch.randn(1, 1, 20, 20)
    result = export_torchscript(model, example, tmp_path / "model.pt")
    parity = torchscript_parity(model, result.path, parity_inputs(example, dynamic_spatial=True))
    sidecar = sidecar_dict(
        result,
        labels={"background": 0, "liver": 1, "tumour": 2},
        spacing=(0.8, 0.8),
        normalisation={"scheme": "zscore", "mean": 10.5, "std": 3.25},
        patch_size=(256, 256),
        slice_axis=2,
        network="unet",
        parity=parity,
    )
    path = write_sidecar(sidecar_path(result.path), sidecar)
    assert path.name == "model.pt.json"
    data = json.loads(path.read_text())
    assert data["schema"] == SIDECAR_SCHEMA and data["format"] == "torchscript" and data["model_file"] == "model.pt"
    assert data["spatial_dims"] == 2 and data["slice_axis"] == 2 and data["network"] == "unet"
    assert data["input"] == {
        "name": "image",
        "layout": "BCXY",
        "channels": 1,
        "dtype": "float32",
        "example_shape": [1, 1, 20, 20],
        "dynamic_batch": True,
        "dynamic_spatial": True,
        "spatial_multiple": 4,
    }
    assert data["output"] == {"name": "logits", "layout": "BKXY", "classes": 3, "kind": "logits"}
    assert data["labels"] == {"background": 0, "liver": 1, "tumour": 2}
    assert data["spacing"] == [0.8, 0.8] and data["patch_size"] == [256, 256]
    assert data["normalisation"]["std"] == 3.25
    assert data["parity"]["passed"] is True and data["parity"]["tolerance"] == PARITY_TOLERANCE
    with pytest.raises(OutputExistsError, match="exists; pass overwrite=True"):
        write_sidecar(path, sidecar)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spacing": [1.0, 1.0, 1.0]}, "invalid spacing"),
        ({"labels": {"a": 1.5}}, "invalid labels"),
        ({"format": "tflite"}, "invalid format"),
        ({"patch_size": [0, 64]}, "invalid patch_size"),
        ({"normalisation": {"mean": math.nan}}, "not plain JSON"),
        ({"extra": object()}, "not plain JSON"),
    ],
)
def test_sidecar_validation(change: dict, message: str, tmp_path: Path) -> None:
    sidecar = {
        "schema": SIDECAR_SCHEMA,
        "format": "onnx",
        "model_file": "model.onnx",
        "spatial_dims": 2,
        "input": {"name": "image", "layout": "BCXY"},
        "output": {"name": "logits", "layout": "BKXY"},
        "labels": {"background": 0, "a": 1},
        "spacing": [1.0, 1.0],
        "normalisation": {"scheme": "zscore"},
        "patch_size": [64, 64],
    }
    write_sidecar(tmp_path / "ok.json", sidecar)
    with pytest.raises(ConfigError, match=message):
        write_sidecar(tmp_path / "bad.json", {**sidecar, **change})
    missing = {k: v for k, v in sidecar.items() if k != "labels"}
    with pytest.raises(ConfigError, match="lacks labels"):
        write_sidecar(tmp_path / "bad.json", missing)
    assert not (tmp_path / "bad.json").exists()
