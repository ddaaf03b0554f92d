"""The plain U-Net baseline: the Attention U-Net's exact encoder, decoder and deep supervision with
no gates, so that a comparison measures the gates and nothing else (the paper's "U-Net" rows).

With 3D, ``feature_scale=4``, 1 input channel, 4 classes and deep supervision it has 5,888,004
parameters, the paper's 5.88 M.
"""

from __future__ import annotations

from collections.abc import Sequence

from attnseg.networks.blocks.conv import NormName
from attnseg.networks.nets.attention_unet import AttentionUNet


class UNet(AttentionUNet):
    """U-Net with the Attention U-Net's widths and optional fused deep supervision, 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: number of classes, background included.
        feature_scale: divides the base widths (64, 128, 256, 512, 1024).
        features: explicit widths, finest first (overrides ``feature_scale``).
        norm: ``"batch"``, ``"instance"`` or ``"group"``.
        deep_supervision: fuse per-level logits into the output, as the paper's baseline.
        aux_outputs: also return per-level logits for a deep-supervision loss.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        feature_scale: float = 4.0,
        features: Sequence[int] | None = None,
        norm: NormName = "batch",
        deep_supervision: bool = True,
        aux_outputs: bool = False,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            feature_scale=feature_scale,
            features=features,
            norm=norm,
            attention_levels=(),
            deep_supervision=deep_supervision,
            aux_outputs=aux_outputs,
        )
