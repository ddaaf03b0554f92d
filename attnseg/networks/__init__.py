"""Networks: blocks, nets, typed outputs and the registry."""

from attnseg.networks.blocks.attention_gate import AttentionGate, MultiHeadAttentionGate
from attnseg.networks.nets.attention_unet import AttentionUNet
from attnseg.networks.nets.unet import UNet
from attnseg.networks.outputs import SegmentationOutput
from attnseg.networks.registry import NETWORKS, NetworkSpec, build_network, register_network

__all__ = [
    "NETWORKS",
    "AttentionGate",
    "AttentionUNet",
    "MultiHeadAttentionGate",
    "NetworkSpec",
    "SegmentationOutput",
    "UNet",
    "build_network",
    "register_network",
]
