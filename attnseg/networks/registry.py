"""Named networks: ``build_network(name, **config)`` and the list shown by ``attnseg models``.

Each entry is a network class plus the preset arguments that make the named variant, and where the
variant comes from. Configuration keys a network does not accept are an error, not silently dropped.

An entry may also carry its network's own training recipe (``recipe``): training-configuration keys
(``optimizer.lr``, ``loss.name``, ...) with the values the network is meant to be trained with. The
training configuration takes them where the user has not set the key (``attnseg.training.config``);
``attnseg train --print-config`` says where each value came from.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnseg.errors import ConfigError
from attnseg.networks.nets.attention_unet import AttentionUNet
from attnseg.networks.nets.ms_guided_attention import MultiScaleGuidedAttentionNet
from attnseg.networks.nets.unet import UNet


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    cls: Callable[..., nn.Module]
    description: str
    preset: dict[str, Any] = field(default_factory=dict)
    spatial_dims: tuple[int, ...] = (2, 3)
    recipe: dict[str, Any] = field(default_factory=dict)
    """Training defaults of this network: dotted training-configuration keys -> values."""
    recipe_source: str = ""
    """Where the recipe comes from (shown by ``--print-config``)."""
    former_presets: tuple[dict[str, Any], ...] = ()
    """The presets this name had before, newest first. A model directory records the network's name and
    the arguments set by hand, not the preset: a model trained before the preset changed is built with
    the preset its weights fit (``build_network(..., fit_weights=state)``). Add the old preset here
    whenever a change to ``preset`` changes the network's tensors."""

    def accepts(self, key: str) -> bool:
        return key in inspect.signature(self.cls).parameters


NETWORKS: dict[str, NetworkSpec] = {}


def register_network(spec: NetworkSpec) -> None:
    if spec.name in NETWORKS:
        raise ValueError(f"network {spec.name!r} is already registered")
    NETWORKS[spec.name] = spec


def get_spec(name: str) -> NetworkSpec:
    if name not in NETWORKS:
        raise ConfigError(f"unknown network {name!r}; choose one of: {', '.join(NETWORKS)}")
    return NETWORKS[name]


def build_network(name: str, *, fit_weights: Mapping[str, torch.Tensor] | None = None, **config: Any) -> nn.Module:
    """Build a registered network; ``config`` overrides the preset's arguments. With ``fit_weights`` (a
    state dict), the preset is the current one or, when its tensors do not fit those weights, the newest
    former preset whose tensors do (``NetworkSpec.former_presets``; the current one when none does, and
    loading the weights then names the difference)."""
    spec = get_spec(name)
    unknown = sorted(k for k in config if not spec.accepts(k))
    if unknown:
        raise ConfigError(f"network {name!r} does not take {', '.join(unknown)}")
    dims = config.get("spatial_dims", spec.preset.get("spatial_dims", 2))
    if dims not in spec.spatial_dims:
        raise ConfigError(f"network {name!r} supports spatial_dims {spec.spatial_dims}, got {dims}")
    preset = spec.preset if fit_weights is None else _preset_fitting(spec, config, fit_weights)
    return spec.cls(**{**preset, **config})


def _preset_fitting(spec: NetworkSpec, config: dict[str, Any], weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The newest of the spec's presets whose network has exactly the tensors (names and shapes) of
    ``weights``; built on the meta device, so nothing is allocated. A name that never changed its preset
    has nothing to choose: no network is built to find that out (every model load passes through here)."""
    if not spec.former_presets:
        return spec.preset
    wanted = {key: tuple(tensor.shape) for key, tensor in weights.items()}
    for preset in (spec.preset, *spec.former_presets):
        with torch.device("meta"):
            candidate = spec.cls(**{**preset, **config})
        if {key: tuple(tensor.shape) for key, tensor in candidate.state_dict().items()} == wanted:
            return preset
    return spec.preset


register_network(
    NetworkSpec(
        "unet",
        UNet,
        "U-Net baseline, same widths and fused deep supervision as the attention model (paper's U-Net)",
    )
)
register_network(
    NetworkSpec(
        "attention_unet",
        AttentionUNet,
        "Attention U-Net, grid gates, 2 heads, decoder gating (authors' current code)",
    )
)
register_network(
    NetworkSpec(
        "attention_unet_single",
        AttentionUNet,
        "Attention U-Net, grid gates, 1 head per level (authors' single-attention model)",
        preset={"gate_heads": 1},
    )
)
register_network(
    NetworkSpec(
        "attention_unet_global",
        AttentionUNet,
        "Attention U-Net, one global gating signal from the bottleneck (authors' earlier code, paper's 6.40 M)",
        preset={"gating": "global"},
    )
)
register_network(
    NetworkSpec(
        "attention_unet_additive",
        AttentionUNet,
        "Attention U-Net, same-resolution additive gates, 1 head (popular re-implementations)",
        preset={"gate_style": "additive", "gate_heads": 1},
    )
)
# Sinha & Dolz's training (their code, sinAshish/Multi-Scale-Attention): Adam with betas (0.9, 0.99), no
# weight decay, no gradient clipping, cross-entropy, batch 8; lr 1e-3, halved after the first epoch and
# constant afterwards: 5e-4 constant here (one epoch of theirs is ~50 of our short epochs). The faithful
# preset trains this way.
AUTHORS_RECIPE: dict[str, Any] = {
    "optimizer.name": "adam",
    "optimizer.lr": 5e-4,
    "optimizer.betas": [0.9, 0.99],
    "optimizer.weight_decay": 0.0,
    "scheduler.name": "constant",
    "training.grad_clip": None,
    "loss.name": "ce",
}
AUTHORS_RECIPE_SOURCE = "Sinha & Dolz's code"
# Measured better for the light presets in short CPU runs (docs/ms-guided.md, "Training recipe": 240 steps
# on mni152-tissue, ms_guided_cpu 0.865 against 0.825 with the authors' recipe, both with Dice + CE): AdamW
# at the demo's 2e-3 with the poly schedule, weight decay and clipping, Dice + CE.
MEASURED_RECIPE: dict[str, Any] = {
    "optimizer.name": "adamw",
    "optimizer.lr": 2e-3,
    "optimizer.betas": [0.9, 0.999],
    "optimizer.weight_decay": 1e-4,
    "scheduler.name": "poly",
    "training.grad_clip": 12.0,
    "loss.name": "dice_ce",
}
MEASURED_RECIPE_SOURCE = "measured, docs/ms-guided.md"
# The CPU preset predicts with its full-resolution head, which corrects the stride-4 prediction (the
# residual head, with image features at full resolution). Its weight in the segmentation term, measured
# at 240 steps, fp32, over seeds (docs/choosing-a-network.md): 4, where 2 lost Dice on both built-in tasks.
# With weight 8 and no residual, the head decided the class from local texture (ctchest's vertebral
# levels: 0.784 against the former head's 0.801 over 3 seeds).
CPU_RECIPE: dict[str, Any] = {**MEASURED_RECIPE, "loss.fine_weight": 4.0}
CPU_RECIPE_SOURCE = "measured, docs/choosing-a-network.md"
CPU_PRESET_BASE: dict[str, Any] = {
    "backbone": "resnet18",
    "backbone_width": 32,
    "head_channels": 16,
    "fine_channels": 32,
    "kv_pool": 2,
    "memory_limit_gib": "auto",
}
CPU_FINE_HEAD: dict[str, Any] = {"fine_stride": 1, "fine_image_features": 16, "fine_residual": True}

register_network(
    NetworkSpec(
        "ms_guided",
        MultiScaleGuidedAttentionNet,
        "Multi-scale self-guided attention, ResNet-18 backbone, the paper's head: light, trains on a CPU",
        preset={"backbone": "resnet18", "memory_limit_gib": "auto"},
        recipe=MEASURED_RECIPE,
        recipe_source=MEASURED_RECIPE_SOURCE,
    )
)
register_network(
    NetworkSpec(
        "ms_guided_hr",
        MultiScaleGuidedAttentionNet,
        "ms_guided + a high-resolution head beyond the paper (stride-2 stem joined, logits at stride 2)",
        preset={"backbone": "resnet18", "fine_stride": 2, "memory_limit_gib": "auto"},
        recipe=MEASURED_RECIPE,
        recipe_source=MEASURED_RECIPE_SOURCE,
    )
)
register_network(
    NetworkSpec(
        "ms_guided_cpu",
        MultiScaleGuidedAttentionNet,
        "ms_guided sized for a CPU: ResNet-18 of width 32, head width 16, keys/values pooled by 2, a narrower "
        "encoder-decoder, and a full-resolution head beyond the paper (stride-2 stem and image features "
        "joined; it corrects the stride-4 prediction at stride 1)",
        # the encoder-decoders at half the authors' widths: the step 1.39x the Attention U-Net's at 96 x 96
        # where it was 1.88x, the same Dice at equal steps (docs/choosing-a-network.md)
        preset={**CPU_PRESET_BASE, **CPU_FINE_HEAD, "semantic_widths": (32, 64)},
        recipe=CPU_RECIPE,
        recipe_source=CPU_RECIPE_SOURCE,
        former_presets=(
            # until 5 December 2026 (fourth stop): the encoder-decoder at the authors' widths (64, 128)
            {**CPU_PRESET_BASE, **CPU_FINE_HEAD},
            # until 5 December 2026 (third stop): the raw image joined at stride 1, not residual
            {**CPU_PRESET_BASE, "fine_stride": 1},
            # until 5 December 2026 (second stop): the head at stride 2 (kv_pool has no tensors: a model
            # of the first, unpooled, version is built pooled, as this preset was when it landed)
            {**CPU_PRESET_BASE, "fine_stride": 2},
        ),
    )
)
register_network(
    NetworkSpec(
        "ms_guided_faithful",
        MultiScaleGuidedAttentionNet,
        "Multi-scale self-guided attention as the authors' code: ResNeXt-101 32x8d, random init, 5 classes",
        preset={
            "backbone": "resnext101_32x8d",
            "share_semantic_module": True,
            "out_channels": 5,
            "memory_limit_gib": "auto",
        },
        recipe=AUTHORS_RECIPE,
        recipe_source=AUTHORS_RECIPE_SOURCE,
    )
)
