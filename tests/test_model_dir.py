"""A model directory records a preset network by name; models trained before the preset changed still
load, with the preset their weights were trained with (``NetworkSpec.former_presets``)."""

import json

import pytest
import torch

from attnseg.model_dir import ModelDir, ModelDirError
from attnseg.networks import MultiScaleGuidedAttentionNet
from attnseg.networks.registry import get_spec

IO = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3}


def model_dir_with(tmp_path, network: torch.nn.Module) -> ModelDir:
    """A model directory as ``attnseg train`` writes it for ``ms_guided_cpu`` (name and the arguments set
    by hand only), holding ``network``'s weights."""
    directory = ModelDir(tmp_path / "model")
    directory.path.mkdir()
    directory.file(ModelDir.NETWORK).write_text(json.dumps({"name": "ms_guided_cpu", "kwargs": IO}))
    directory.save_weights(network)
    return directory


def trained_with(preset: dict) -> MultiScaleGuidedAttentionNet:
    torch.manual_seed(0)
    network = MultiScaleGuidedAttentionNet(**{**preset, **IO})
    for module in network.modules():  # running statistics other than the initial ones
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
    return network.eval()


def semantic_widths(network: MultiScaleGuidedAttentionNet) -> tuple[int, int]:
    """The encoder-decoder's two level widths, read from its layers."""
    semantic = network.refinement[0].semantic[0]
    return semantic.enc1[0][0][0].out_channels, semantic.enc2[0][0][0].out_channels


@pytest.mark.parametrize("age", range(len(get_spec("ms_guided_cpu").former_presets)))
def test_a_model_of_a_former_preset_loads_with_that_preset_and_predicts_as_it_did(tmp_path, age):
    former = get_spec("ms_guided_cpu").former_presets[age]
    original = trained_with(former)
    loaded = model_dir_with(tmp_path, original).build_network()
    assert loaded.fine_stride == former["fine_stride"]
    assert loaded.fine_residual == former.get("fine_residual", False)
    assert (loaded.fine_head.image_encoder is not None) == bool(former.get("fine_image_features"))
    assert semantic_widths(loaded) == tuple(former.get("semantic_widths", (64, 128)))  # the authors': 4C, 8C
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)


def test_a_model_of_the_current_preset_loads_with_it(tmp_path):
    original = trained_with(get_spec("ms_guided_cpu").preset)
    loaded = model_dir_with(tmp_path, original).build_network()
    assert loaded.fine_residual and loaded.fine_head.image_encoder is not None
    assert semantic_widths(loaded) == (32, 64)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)


def test_weights_that_fit_no_preset_are_refused_naming_the_file(tmp_path):
    other = trained_with({**get_spec("ms_guided_cpu").preset, "head_channels": 8})
    with pytest.raises(ModelDirError, match=r"weights\.safetensors: weights do not fit the network in network\.json"):
        model_dir_with(tmp_path, other).build_network()
