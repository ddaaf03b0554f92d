import json

from attnseg.cli import main


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
