"""Encoders (written here, torchvision-compatible weights), 2D or 3D, with feature taps at strides 4, 8, 16, 32."""

from attnseg.networks.backbones.resnet import (
    BACKBONES,
    BasicBlock,
    Bottleneck,
    ResNetBackbone,
    adapt_first_conv,
    build_backbone,
    inflate_kernel,
    read_state_dict,
)

__all__ = [
    "BACKBONES",
    "BasicBlock",
    "Bottleneck",
    "ResNetBackbone",
    "adapt_first_conv",
    "build_backbone",
    "inflate_kernel",
    "read_state_dict",
]
