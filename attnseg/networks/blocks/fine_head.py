"""A high-resolution head for the multi-scale guided attention network: beyond the paper.

Sinha & Dolz (JBHI 2020, arXiv:1906.02849) predict on the stride-4 grid and resize the logits x4 to
the input. For thin structures that caps the Dice whatever the training: on the demo's grey-matter
ribbon at 2 mm, free logits fitted on the stride-4 grid reach at best about 0.906 mean Dice under
bilinear x4 upsampling, on the stride-2 grid about 0.997 (issue 20). This head restores the
resolution the way decoders of the DeepLabv3+ family do (Chen et al., ECCV 2018: coarse context
upsampled and joined with low-level encoder features, then a few 3x3 convolutions):

* the mean of the last refinement step's guided features A_s (C channels, stride 4), resized to
  stride 2 (bilinear/trilinear);
* joined (concatenated) with the backbone's stem features (its first convolution, norm and ReLU, at
  stride 2, before the max-pool);
* two 3x3 conv-norm-PReLU layers to ``channels`` channels, and a 1x1 head to the K classes;
* ``stride=1``: the stride-2 features are resized once more to the input grid, joined with the input
  image itself, and one more 3x3 conv-norm-PReLU runs there before the head;
* ``image_features`` (stride 1): the image first passes two 3x3 conv-norm-PReLU layers of that width,
  the full-resolution level of a U-Net encoder, and those features are joined instead of the raw image.
  With one conv on the joined maps, the raw image gives the head a single 3x3 look at full resolution;
  a thin structure (the demo's grey-matter ribbon at 2 mm is 1-2 voxels wide) needs full-resolution
  features of its own. Measured at 240 steps (docs/choosing-a-network.md): 16 features took the CPU
  preset from 0.883 to 0.908 mean Dice on mni152-tissue (3 seeds; the Attention U-Net: 0.897).

Where this deviates from DeepLabv3+, and why: no 1x1 reduction of the stem features (the backbone's
stem has 64 channels or fewer, already narrow); PReLU, as the rest of the multi-scale head (the
authors' choice).
"""

from __future__ import annotations

import torch
from torch import nn

from attnseg.networks.blocks.conv import ConvNormAct, NormName, conv_layer, resize_to

FINE_STRIDES = (1, 2)


class FineHead(nn.Module):
    """Logits at stride 2 or 1 from stride-4 context, the stride-2 stem and (stride 1) the image.

    Args:
        context_channels: C, the width of the refined features.
        stem_channels: the backbone's stem width.
        image_channels: the input's channels (joined at stride 1 only).
        channels: the head's width.
        out_channels: K classes.
        stride: 2 (the logits on the stride-2 grid) or 1 (on the input grid).
        norm: normalisation of the conv blocks.
        spatial_dims: 2 or 3.
        image_features: stride 1 only: the width of the two full-resolution conv layers the image passes
            before it is joined (0: the raw image is joined).
    """

    def __init__(
        self,
        context_channels: int,
        stem_channels: int,
        image_channels: int,
        channels: int,
        out_channels: int,
        stride: int = 2,
        norm: NormName = "batch",
        spatial_dims: int = 2,
        image_features: int = 0,
    ) -> None:
        super().__init__()
        if stride not in FINE_STRIDES:
            raise ValueError(f"the fine head's stride must be one of {FINE_STRIDES}, got {stride}")
        if image_features < 0 or (image_features and stride != 1):
            raise ValueError(f"image features need stride 1 and a width >= 0, got {image_features} at stride {stride}")
        n = spatial_dims
        self.stride = stride
        self.stem_block = nn.Sequential(
            ConvNormAct(n, context_channels + stem_channels, channels, 3, norm, act=nn.PReLU),
            ConvNormAct(n, channels, channels, 3, norm, act=nn.PReLU),
        )
        self.image_encoder = (
            nn.Sequential(
                ConvNormAct(n, image_channels, image_features, 3, norm, act=nn.PReLU),
                ConvNormAct(n, image_features, image_features, 3, norm, act=nn.PReLU),
            )
            if stride == 1 and image_features
            else None
        )
        joined = channels + (image_features or image_channels)
        self.image_block = ConvNormAct(n, joined, channels, 3, norm, act=nn.PReLU) if stride == 1 else None
        self.head = conv_layer(n, channels, out_channels, 1)

    def forward(self, context: torch.Tensor, stem: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``context`` (B, C, *s/4... stride 4), ``stem`` (stride 2), ``image`` (stride 1; used at
        stride 1 only) -> logits (B, K) on the stem's grid (stride 2) or the image's (stride 1)."""
        x = self.stem_block([resize_to(context, stem.shape[2:]), stem])
        if self.image_block is not None:
            image = image.to(x.dtype)
            if self.image_encoder is not None:
                image = self.image_encoder(image)
            x = self.image_block([resize_to(x, image.shape[2:]), image])
        return self.head(x)


def fine_head_parameters(
    context_channels: int,
    stem_channels: int,
    image_channels: int,
    channels: int,
    out_channels: int,
    stride: int = 2,
    spatial_dims: int = 2,
    image_features: int = 0,
) -> int:
    """The head's parameter count with batch norm, from the formula: a k^n conv from a to b channels
    has a·b·k^n weights and b biases, a batch norm 2b, a PReLU 1."""
    taps = 3**spatial_dims

    def block(a: int, b: int) -> int:
        return a * b * taps + b + 2 * b + 1

    total = block(context_channels + stem_channels, channels) + block(channels, channels)
    if stride == 1:
        total += block(channels + (image_features or image_channels), channels)
    if image_features:
        total += block(image_channels, image_features) + block(image_features, image_features)
    return total + channels * out_channels + out_channels
