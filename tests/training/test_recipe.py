"""A network's own training recipe: its values apply where the user has not set the key, and
``--print-config`` says where every value came from."""

import pytest
import torch
import yaml

from attnseg.cli import main
from attnseg.errors import ConfigError
from attnseg.networks.registry import AUTHORS_RECIPE, MEASURED_RECIPE, NETWORKS, get_spec
from attnseg.training.config import Config, load_config
from attnseg.training.optim import build_optimizer

RECIPE = "network recipe (ms_guided: measured, docs/ms-guided.md)"
AUTHORS = "network recipe (ms_guided_faithful: Sinha & Dolz's code)"


def test_the_faithful_network_brings_the_authors_recipe():
    config = load_config(None, ["network.name=ms_guided_faithful"])
    assert config.optimizer.name == "adam" and config.optimizer.lr == 5e-4
    assert config.optimizer.betas == (0.9, 0.99) and config.optimizer.weight_decay == 0.0
    assert config.training.grad_clip is None and config.loss.name == "ce" and config.scheduler.name == "constant"
    for key in AUTHORS_RECIPE:
        assert config.source(key) == AUTHORS
    assert config.source("network.name") == "user"
    assert config.source("data.batch_size") == "default"
    optimizer = build_optimizer(config.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.defaults["betas"] == (0.9, 0.99) and optimizer.defaults["weight_decay"] == 0.0


def test_the_light_presets_bring_the_measured_recipe():
    config = load_config(None, ["network.name=ms_guided"])
    assert (config.optimizer.name, config.optimizer.lr, config.scheduler.name) == ("adamw", 2e-3, "poly")
    assert config.loss.name == "dice_ce" and config.training.grad_clip == 12.0
    for key in MEASURED_RECIPE:
        assert config.source(key) == RECIPE
    names = [name for name, spec in NETWORKS.items() if spec.recipe]
    assert names == ["ms_guided", "ms_guided_hr", "ms_guided_cpu", "ms_guided_faithful"]


def test_the_cpu_preset_weights_its_full_resolution_head():
    """ms_guided_cpu predicts with its residual stride-1 head, which its recipe weights 4 against 1 for
    each of the eight stride-4 heads (measured, docs/choosing-a-network.md); the other presets keep 1."""
    config = load_config(None, ["network.name=ms_guided_cpu"])
    preset = get_spec("ms_guided_cpu").preset
    assert config.loss.fine_weight == 4.0 and preset["fine_stride"] == 1 and preset["fine_residual"]
    assert config.source("loss.fine_weight") == "network recipe (ms_guided_cpu: measured, docs/choosing-a-network.md)"
    assert config.optimizer.name == "adamw" and config.source("optimizer.name").startswith("network recipe")
    assert load_config(None, ["network.name=ms_guided_hr"]).loss.fine_weight == 1.0
    assert load_config(None, ["network.name=ms_guided_cpu", "loss.fine_weight=1"]).loss.fine_weight == 1.0


def test_what_the_user_sets_wins_over_the_recipe(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("network:\n  name: ms_guided_faithful\noptimizer:\n  lr: 0.002\n")
    config = load_config(path, ["loss.name=dice_ce", "training.grad_clip=5"])
    assert (config.optimizer.lr, config.loss.name, config.training.grad_clip) == (0.002, "dice_ce", 5.0)
    assert config.source("optimizer.lr") == config.source("loss.name") == "user"
    assert config.optimizer.name == "adam" and config.source("optimizer.name").startswith("network recipe")


def test_networks_without_a_recipe_keep_the_defaults():
    config = load_config(None, [])
    assert not get_spec("attention_unet").recipe
    assert config.optimizer == Config().optimizer and config.loss == Config().loss
    assert set(config.sources().values()) == {"default"}


def test_an_unknown_network_is_still_the_validation_error():
    with pytest.raises(ConfigError, match=r"network\.name"):
        load_config(None, ["network.name=nope"])


def test_print_config_shows_the_source_of_every_value_and_loads_back(capsys, tmp_path):
    assert main(["train", "--network", "ms_guided_faithful", "--set", "optimizer.lr=0.001", "--print-config"]) == 0
    text = capsys.readouterr().out
    lines = [line.strip() for line in text.splitlines() if "#" in line]
    assert f"{'name: ms_guided_faithful':<42}  # user" in lines and f"{'lr: 0.001':<42}  # user" in lines
    assert f"{'name: adam':<42}  # {AUTHORS}" in lines and f"{'betas: [0.9, 0.99]':<42}  # {AUTHORS}" in lines
    assert f"{'grad_clip: null':<42}  # {AUTHORS}" in lines and f"{'batch_size: 8':<42}  # default" in lines
    assert all(line.endswith(("# user", "# default", f"# {AUTHORS}")) for line in lines)
    assert len(lines) == len(load_config(None, ["network.name=ms_guided"]).sources())
    loaded = yaml.safe_load(text)
    assert loaded == load_config(None, ["network.name=ms_guided_faithful", "optimizer.lr=0.001"]).to_dict()
    path = tmp_path / "printed.yaml"
    path.write_text(text)
    assert load_config(path).to_dict() == loaded


def test_3d_trains_with_batch_2_unless_set():
    """nnU-Net's 3d_fullres batch: 3D defaults to 2 (8 patches of ~100^3 make a step a CPU budget can
    barely afford); 2D keeps 8, and a batch the user sets always wins."""
    config = load_config(None, ["network.spatial_dims=3"])
    assert config.data.batch_size == 2 and config.source("data.batch_size").startswith("3D default")
    assert load_config(None, ["network.spatial_dims=3", "data.batch_size=4"]).data.batch_size == 4
    assert load_config(None, ["network.spatial_dims=2"]).data.batch_size == 8
    both = load_config(None, ["network.name=ms_guided_cpu", "network.spatial_dims=3"])
    assert both.data.batch_size == 2 and both.loss.fine_weight == 4.0
