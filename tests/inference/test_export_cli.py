import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import torch

from attnseg.cli import main
from attnseg.export import PARITY_TOLERANCE, SIDECAR_SCHEMA
from attnseg.model_dir import ModelDir


def test_export_torchscript_from_a_model_dir(trained_model, tmp_path, capsys):
    target = tmp_path / "deploy" / "tiny.pt"
    assert main(["export", "-m", str(trained_model), "--format", "torchscript", "-o", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "parity with the eager model passes" in printed
    sidecar = json.loads((tmp_path / "deploy" / "tiny.pt.json").read_text())
    assert sidecar["format"] == "torchscript"
    assert sidecar["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert sidecar["parity"]["max_abs_diff"] <= 1e-4
    assert sidecar["slice_axis"] == 2 and len(sidecar["spacing"]) == 2
    assert sidecar["normalisation"]["channel_names"] == ["MR"]
    assert main(["export", "-m", str(trained_model), "--format", "torchscript", "-o", str(target)]) == 2


def test_export_onnx_from_a_model_dir_as_the_readme_says(trained_model, tmp_path, capsys):
    """`attnseg export -m MODEL_DIR --format onnx` (the README's command): MODEL_DIR/model.onnx and its
    sidecar, with the parity check passing; the file is then checked here too, in onnxruntime against the
    eager network, so a parity check that cannot fail would not hide a wrong export."""
    model = tmp_path / "tiny"
    shutil.copytree(trained_model, model)
    assert main(["export", "-m", str(model), "--format", "onnx"]) == 0
    printed = capsys.readouterr().out
    onnx_file, sidecar_file = model / "model.onnx", model / "model.onnx.json"
    assert f"wrote {onnx_file} and {sidecar_file}; parity with the eager model passes" in printed

    sidecar = json.loads(sidecar_file.read_text())
    plan = ModelDir(model).load_plan()
    assert sidecar["schema"] == SIDECAR_SCHEMA and sidecar["format"] == "onnx"
    assert sidecar["model_file"] == "model.onnx" and sidecar["network"] == "attention_unet"
    assert sidecar["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert sidecar["spatial_dims"] == 2 and sidecar["slice_axis"] == 2
    assert sidecar["patch_size"] == list(plan.patch_size) and len(sidecar["spacing"]) == 2
    assert sidecar["input"]["name"] == "image" and sidecar["input"]["channels"] == 1
    assert sidecar["input"]["dynamic_batch"] and sidecar["input"]["dynamic_spatial"]
    assert sidecar["output"] == {"name": "logits", "layout": "BKXY", "classes": 3, "kind": "logits"}
    parity = sidecar["parity"]
    assert parity["format"] == "onnx" and parity["passed"] is True
    assert parity["tolerance"] == PARITY_TOLERANCE and 0 <= parity["max_abs_diff"] <= PARITY_TOLERANCE
    example = [1, 1, *plan.patch_size]
    grown = [1, 1, *(s + 3 for s in plan.patch_size)]
    assert parity["input_shapes"] == [example, [2, *example[1:]], grown]  # the example, another batch, size
    assert f"{parity['max_abs_diff']:.2e} (tolerance {PARITY_TOLERANCE:.0e})" in printed

    onnx.checker.check_model(onnx.load(str(onnx_file)))
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    network = ModelDir(model).build_network(weights=True)
    x = torch.randn(3, 1, 37, 29, generator=torch.Generator().manual_seed(5))  # not a parity input's size
    with torch.no_grad():
        eager = network(x).numpy()
    exported = session.run(None, {"image": x.numpy()})[0]
    assert exported.shape == eager.shape == (3, 3, 37, 29)
    np.testing.assert_allclose(exported, eager, atol=PARITY_TOLERANCE, rtol=0)

    assert main(["export", "-m", str(model), "--format", "onnx"]) == 2  # keeps the earlier export
    assert "exists; pass overwrite=True" in capsys.readouterr().err
    assert main(["export", "-m", str(model), "--format", "onnx", "--overwrite"]) == 0


def test_guided_network_onnx_failure_says_why_and_what_to_use_instead(tmp_path, capsys):
    """torch.export cannot export the guided network at any spatial size (docs/export.md). The command said
    only torch's wrapper line, with terminal colour codes, and advised `dynamic_spatial=False`, a Python
    argument the command line does not have; now: the reason from the cause, and the formats that work."""
    from tests.fixtures import nnunet_builder

    data = nnunet_builder(tmp_path)(cases=3, shape=(20, 18, 6), classes=2)
    model = tmp_path / "ms"
    train = ["train", "--dataset", str(data), "--output", str(model), "--network", "ms_guided_cpu", "--epochs", "1"]
    assert main([*train, "--no-progress", "--set", "training.iterations_per_epoch=1", "--set", "training.amp=off"]) == 0
    capsys.readouterr()
    assert main(["export", "-m", str(model), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "ONNX export of MultiScaleGuidedAttentionNet failed: Failed to export the model with torch.export." in err
    assert "<- NotImplementedError: " in err  # the reason, from the wrapper's cause
    assert err.rstrip().endswith(
        "; --format torchscript or --format monai-bundle export it at any size (docs/export.md)"
    )
    assert "\x1b[" not in err and "dynamic_spatial" not in err
    assert not (model / "model.onnx").exists()
