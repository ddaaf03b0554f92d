"""Fine-tuning from another model (``attnseg train --init-from``, ``--freeze encoder``) and the model
card every training writes: real trainings of a tiny network through the command line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnseg.cli import main
from attnseg.errors import ConfigError
from attnseg.model_dir import ModelDir
from attnseg.networks.registry import build_network
from attnseg.training.init_from import load_matching
from tests.fixtures import nnunet_builder

TINY = [
    "--set", "network.features=[4,8,16]",
    "--set", "data.batch_size=4",
    "--set", "training.iterations_per_epoch=3",
    "--set", "training.amp=off",
    "--set", "training.layout=contiguous",
    "--no-progress",
]  # fmt: skip


def tensor_hash(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def source_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model of 3 classes (background, organ, lesion)."""
    data = nnunet_builder(tmp_path_factory.mktemp("source"))(cases=4, shape=(20, 18, 6), classes=3)
    output = tmp_path_factory.mktemp("runs") / "source"
    assert main(["train", "--dataset", str(data), "--output", str(output), "--epochs", "1", *TINY]) == 0
    return output


@pytest.fixture(scope="module")
def two_class_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nnunet_builder(tmp_path_factory.mktemp("target"))(
        cases=4, shape=(20, 18, 6), classes=2, name="Dataset003_Two"
    )


def test_fine_tune_to_other_classes_loads_matching_tensors_and_freezes_the_encoder(
    source_model: Path, two_class_data: Path, tmp_path: Path
) -> None:
    output = tmp_path / "tuned"
    args = ["train", "--dataset", str(two_class_data), "--output", str(output), "--epochs", "2"]
    assert main([*args, "--init-from", str(source_model), "--freeze", "encoder", *TINY]) == 0

    source = load_file(str(ModelDir(source_model).file(ModelDir.WEIGHTS)))
    tuned = load_file(str(ModelDir(output).file(ModelDir.WEIGHTS)))
    record = json.loads((output / "init.json").read_text())
    loaded, fresh = set(record["loaded"]), set(record["fresh"])
    # the heads predict 2 classes now, not 3: initialised fresh, and said why
    heads = {name for name in tuned if name.startswith("heads.")}
    assert heads and heads <= fresh and "shape" in record["fresh"][sorted(heads)[0]]
    assert loaded == {name for name in tuned if name not in fresh}
    assert all(source[name].shape == tuned[name].shape for name in loaded)
    # the frozen encoder, buffers included, is the source's to the bit after two epochs of training
    frozen = set(record["frozen"])
    assert frozen and all(name.startswith("encoder.") for name in frozen)
    assert {name for name in tuned if name.startswith("encoder.")} == frozen
    assert all(tensor_hash(tuned[name]) == tensor_hash(source[name]) for name in frozen)
    # what was not frozen trained: a loaded decoder tensor moved, and the new head is not the source's
    trained = [name for name in loaded - frozen if name.endswith(".weight") and source[name].dim() > 1]
    assert trained and any(tensor_hash(tuned[name]) != tensor_hash(source[name]) for name in trained)
    assert (output / "MODEL_CARD.md").read_text().count(str(source_model)) == 1


def test_loaded_tensors_equal_the_source_before_training(source_model: Path, two_class_data: Path) -> None:
    """Right after --init-from, before any step: every loaded tensor is the source's, bit for bit."""

    spec = ModelDir(source_model).network_spec()
    model = build_network(spec["name"], **{**spec["kwargs"], "out_channels": 2, "in_channels": 2})
    before = {k: tensor_hash(v) for k, v in model.state_dict().items()}
    record = load_matching(model, source_model)
    source = load_file(str(ModelDir(source_model).file(ModelDir.WEIGHTS)))
    state = model.state_dict()
    assert all(tensor_hash(state[name]) == tensor_hash(source[name]) for name in record.loaded)
    # two input channels: the first convolution stays fresh too, as do the heads
    assert "encoder.0.0.0.weight" in record.fresh
    assert all(tensor_hash(state[name]) == before[name] for name in record.fresh)


def test_freeze_for_first_epochs_releases_the_encoder(source_model: Path, two_class_data: Path, tmp_path: Path) -> None:
    output = tmp_path / "released"
    args = ["train", "--dataset", str(two_class_data), "--output", str(output), "--epochs", "2"]
    flags = ["--init-from", str(source_model), "--freeze", "encoder", "--freeze-epochs", "1"]
    assert main([*args, *flags, *TINY]) == 0
    source = load_file(str(ModelDir(source_model).file(ModelDir.WEIGHTS)))
    tuned = load_file(str(ModelDir(output).file(ModelDir.WEIGHTS)))
    encoder = [name for name in tuned if name.startswith("encoder.") and name.endswith("0.weight")]
    assert any(tensor_hash(tuned[name]) != tensor_hash(source[name]) for name in encoder)


def test_model_card(source_model: Path) -> None:
    card = (source_model / "MODEL_CARD.md").read_text()
    assert ModelDir(source_model).weights_sha256() in card
    for section in ("## Data", "## Recipe", "## Validation", "## Not for", "## Training", "fingerprint"):
        assert section in card
    assert "| organ |" in card and "| lesion |" in card


def test_the_report_carries_the_model_card(source_model: Path) -> None:
    from attnseg.visualize.report import find_run, render_report

    page = render_report(find_run(source_model))
    assert '<a href="#model-card">' in page and '<section id="model-card">' in page
    assert ModelDir(source_model).weights_sha256() in page


def test_keep_source_plan_takes_spacing_and_normalisation(source_model: Path, tmp_path: Path) -> None:
    """The new dataset plans its own spacing unless --keep-source-plan; then the source's are kept."""
    data = nnunet_builder(tmp_path)(
        cases=4, shape=(20, 18, 6), classes=2, spacing=(1.6, 1.6, 3.0), name="Dataset004_Coarse"
    )
    source_plan = json.loads((source_model / "plan.json").read_text())
    plans = {}
    for keep in (False, True):
        output = tmp_path / f"keep_{keep}"
        args = [
            "train",
            "--dataset",
            str(data),
            "--output",
            str(output),
            "--epochs",
            "1",
            "--init-from",
            str(source_model),
        ]
        assert main([*args, *(["--keep-source-plan"] if keep else []), *TINY]) == 0
        plans[keep] = json.loads((output / "plan.json").read_text())
    assert plans[False]["target_spacing"] != source_plan["target_spacing"]
    assert plans[True]["target_spacing"] == source_plan["target_spacing"]
    assert plans[True]["normalization"] == source_plan["normalization"]


def test_freeze_leaves_encoder_tensors_that_were_not_loaded_trainable(source_model: Path, tmp_path: Path) -> None:
    """Two input channels where the source had one: the first convolution cannot be loaded and starts
    fresh. Frozen with the rest of the encoder, it stayed random for the whole run; it trains, and
    every loaded encoder tensor stays the source's."""
    data = nnunet_builder(tmp_path)(cases=4, shape=(20, 18, 6), classes=2, channels=2, name="Dataset006_TwoCh")
    output = tmp_path / "two_channels"
    args = ["train", "--dataset", str(data), "--output", str(output), "--epochs", "1"]
    assert main([*args, "--init-from", str(source_model), "--freeze", "encoder", *TINY]) == 0

    record = json.loads((output / "init.json").read_text())
    first = "encoder.0.0.0.weight"
    assert first in record["fresh"] and first not in record["frozen"]
    assert record["frozen"] and not set(record["frozen"]) & set(record["fresh"])
    source = load_file(str(ModelDir(source_model).file(ModelDir.WEIGHTS)))
    tuned = load_file(str(ModelDir(output).file(ModelDir.WEIGHTS)))
    assert all(tensor_hash(tuned[name]) == tensor_hash(source[name]) for name in record["frozen"])


def test_start_finetune_freezes_only_what_it_loaded(source_model: Path, tmp_path: Path) -> None:
    """The same at the layer that decides: the fresh first convolution keeps its gradient, the loaded
    encoder tensors lose theirs, and the freeze's release gives every tensor its gradient back."""
    from attnseg.training.config import Config, FinetuneConfig
    from attnseg.training.finetune import start_finetune

    spec = ModelDir(source_model).network_spec()
    model = build_network(spec["name"], **{**spec["kwargs"], "in_channels": 2, "out_channels": 2})
    config = Config(finetune=FinetuneConfig(init_from=source_model, freeze="encoder", freeze_epochs=1))
    release = start_finetune(config, model, ModelDir(tmp_path / "run"), resume=False, is_main=True)
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    assert grads["encoder.0.0.0.weight"] and not grads["encoder.0.0.0.bias"]
    assert not any(grads[name] for name in grads if name.startswith("encoder.") and name != "encoder.0.0.0.weight")
    assert release is not None
    release(1)
    assert all(p.requires_grad for p in model.parameters())


def test_a_2d_source_cannot_start_a_3d_network(source_model: Path) -> None:
    """A 2D model's convolutions have no place in a 3D network of the same names: only its biases and
    normalisation vectors fit. Loading those alone is no fine-tuning; it is refused, saying why."""
    spec = ModelDir(source_model).network_spec()
    model = build_network(spec["name"], **{**spec["kwargs"], "spatial_dims": 3})
    message = r"no weight of .*weights\.safetensors.*the source is a 2D network, this one 3D"
    with pytest.raises(ConfigError, match=message):
        load_matching(model, source_model)


def test_freeze_needs_a_source(two_class_data: Path, tmp_path: Path) -> None:
    """--freeze without --init-from would fix a random encoder for the run: refused."""
    args = ["train", "--dataset", str(two_class_data), "--output", str(tmp_path / "frozen"), "--epochs", "1"]
    assert main([*args, "--freeze", "encoder", *TINY]) != 0
    assert not (tmp_path / "frozen" / "weights.safetensors").exists()


@pytest.mark.parametrize("inside", ["", "weights.safetensors"])
def test_fine_tuning_into_its_own_source_is_refused(
    source_model: Path, two_class_data: Path, tmp_path: Path, inside: str
) -> None:
    """--init-from X --output X --overwrite replaced the source by its fine-tuned copy, whose card then
    named itself as the source: refused, and the source is left as it was."""
    source = tmp_path / "source"
    shutil.copytree(source_model, source)
    before = (source / "weights.safetensors").read_bytes()
    args = ["train", "--dataset", str(two_class_data), "--output", str(source), "--epochs", "1", "--overwrite"]
    assert main([*args, "--init-from", str(source / inside), *TINY]) != 0
    assert (source / "weights.safetensors").read_bytes() == before
    assert not (source / "init.json").exists()
