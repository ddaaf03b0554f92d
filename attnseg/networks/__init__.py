"""Networks: blocks, nets, typed outputs and the registry."""

from attnseg.networks.backbones import BACKBONES, ResNetBackbone, build_backbone
from attnseg.networks.blocks.attention_gate import AttentionGate, MultiHeadAttentionGate
from attnseg.networks.blocks.channel_attention import ChannelAttention
from attnseg.networks.blocks.position_attention import PositionAttention
from attnseg.networks.blocks.semantic_module import SemanticModule
from attnseg.networks.memory import MemoryBudgetError, MemoryEstimate, estimate_step_memory
from attnseg.networks.nets.attention_unet import AttentionUNet
from attnseg.networks.nets.ms_guided_attention import MultiScaleGuidedAttentionNet
from attnseg.networks.nets.unet import UNet
from attnseg.networks.outputs import GuidedAttentionOutput, SegmentationOutput
from attnseg.networks.registry import NETWORKS, NetworkSpec, build_network, register_network

__all__ = [
    "BACKBONES",
    "NETWORKS",
    "AttentionGate",
    "AttentionUNet",
    "ChannelAttention",
    "GuidedAttentionOutput",
    "MemoryBudgetError",
    "MemoryEstimate",
    "MultiHeadAttentionGate",
    "MultiScaleGuidedAttentionNet",
    "NetworkSpec",
    "PositionAttention",
    "ResNetBackbone",
    "SegmentationOutput",
    "SemanticModule",
    "UNet",
    "build_backbone",
    "build_network",
    "estimate_step_memory",
    "register_network",
]
