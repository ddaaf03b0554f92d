"""Parameter counts derived from layer shapes: where the golden counts of the network tests come from.

The rules (n = spatial dimensions, 2 or 3):

* a convolution, k x k (x k) kernel: k**n * (c_in / groups) * c_out weights, plus c_out biases if it has
  them; a 2 x 2 (x 2) transposed convolution counts the same way;
* a batch norm over c channels: 2c (gamma and beta; the running statistics are buffers);
* a PReLU: 1 (one slope shared by the channels, PyTorch's default);
* the gamma of a position (PAM) or channel (CAM) attention module: 1.

The multi-scale guided attention network (Sinha & Dolz, JBHI 2020; docs/ms-guided.md has the diagram)
is then composed part by part below, as ``attnseg.networks.nets.ms_guided_attention`` builds it. The
backbones are torchvision's ResNet-18 and ResNeXt-101 32x8d, counted by the same rules
(``resnet_parameters``), which reproduces torchvision's published counts (tests/networks/test_backbones.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from attnseg.networks.backbones import BACKBONES

SCALES = 4  # backbone stages tapped at strides 4, 8, 16, 32
STAGE_WIDTH = 64  # torchvision's stem width: stage i has 64 * 2**i planes


def conv(c_in: int, c_out: int, k: int, n: int, bias: bool = True, groups: int = 1) -> int:
    return k**n * (c_in // groups) * c_out + (c_out if bias else 0)


def batch_norm(c: int) -> int:
    return 2 * c


def conv_norm_prelu(c_in: int, c_out: int, k: int, n: int) -> int:
    """ConvNormAct with act=PReLU: conv with bias, batch norm, one PReLU slope."""
    return conv(c_in, c_out, k, n) + batch_norm(c_out) + 1


def conv_norm_relu(c_in: int, c_out: int, k: int, n: int) -> int:
    """ConvNormAct with ReLU (no parameters)."""
    return conv(c_in, c_out, k, n) + batch_norm(c_out)


def resnet_parameters(name: str, in_channels: int, spatial_dims: int) -> int:
    """Parameters of a ResNet/ResNeXt without classifier, counted from its definition: a k x k kernel has
    k**spatial_dims taps (the stem's k = 7, the blocks' 3, shortcuts 1); two per batch norm."""
    spec = BACKBONES[name]
    taps = {k: k**spatial_dims for k in (1, 3, 7)}
    total = 64 * in_channels * taps[7] + 2 * 64
    inplanes = 64
    for stage, blocks in enumerate(spec.layers):
        planes = 64 * 2**stage
        for b in range(blocks):
            if spec.block.expansion == 1:
                total += inplanes * planes * taps[3] + planes * planes * taps[3] + 4 * planes
                out = planes
            else:
                width = int(planes * spec.width_per_group / 64) * spec.groups
                out = 4 * planes
                total += inplanes * width + width * (width // spec.groups) * taps[3] + width * out
                total += 2 * (2 * width + out)
            if b == 0 and (stage > 0 or inplanes != out):
                total += inplanes * out + 2 * out  # 1x1 shortcut + batch norm
            inplanes = out
    return total


def stage_channels(name: str) -> list[int]:
    """Output channels of the four stages: 64 * 2**i planes, times 4 for bottleneck blocks."""
    expansion = 4 if BACKBONES[name].block.expansion == 4 else 1
    return [STAGE_WIDTH * 2**i * expansion for i in range(SCALES)]


def semantic_module(d: int, n: int, widths: tuple[int, int] | None = None) -> int:
    """The encoder-decoder on d channels: encoder d -> a -> b (double 3x3 conv-norm-ReLU, then max-pool,
    no parameters), decoder b -> a -> d (double 3x3 conv-norm-ReLU, then a 2x2 stride-2 transposed conv
    that keeps the width); the authors' a, b = 2d, 4d."""

    def double(x: int, y: int) -> int:
        return conv_norm_relu(x, y, 3, n) + conv_norm_relu(y, y, 3, n)

    a, b = widths or (2 * d, 4 * d)
    encoder = double(d, a) + double(a, b)
    decoder = double(b, a) + conv(a, a, 2, n) + double(a, d) + conv(d, d, 2, n)
    return encoder + decoder


def position_attention(c: int, n: int, reduction: int = 8) -> int:
    """PAM: 1x1 query and key convs (c -> c/8), 1x1 value conv (c -> c), all with bias, and gamma."""
    return 2 * conv(c, c // reduction, 1, n) + conv(c, c, 1, n) + 1


CHANNEL_ATTENTION = 1  # CAM: gamma only, no projections


def attention_branch(c: int, n: int, attention: int) -> int:
    """The authors' PAM_CAM_Layer: 3x3 conv-norm-PReLU 2c -> c, the attention module, 3x3 conv-norm-PReLU."""
    return conv_norm_prelu(2 * c, c, 3, n) + attention + conv_norm_prelu(c, c, 3, n)


@dataclass(frozen=True)
class MultiScaleCounts:
    """The parts of MultiScaleGuidedAttentionNet, named as its modules; ``head`` is all but the backbone."""

    backbone: int
    projections: int  # per stage: 1x1 conv-norm-PReLU, stage width -> c
    fuse: int  # F_MS: 3x3 (4c -> c), 3x3 (c -> c), 1x1 (c -> c) conv-norm-PReLU
    semantic: int  # the encoder-decoders of every step (one per step when shared by the scales)
    branches: int  # the PAM and CAM branches of every step and scale
    guidance: int  # per step and scale: 3x3 conv 2c -> c on the reconstruction, 1x1 conv c -> c (A_s)
    heads: int  # 1x1 conv c -> K on each F'_s and on each refined map: 2 x 4

    @property
    def head(self) -> int:
        return self.projections + self.fuse + self.semantic + self.branches + self.guidance + self.heads

    @property
    def total(self) -> int:
        return self.backbone + self.head


def ms_guided_parameters(
    backbone: str,
    in_channels: int,
    out_channels: int,
    spatial_dims: int = 2,
    head_channels: int = 64,
    steps: int = 2,
    share_semantic_module: bool = True,
    semantic_widths: tuple[int, int] | None = None,
) -> MultiScaleCounts:
    """The parameter count of ``MultiScaleGuidedAttentionNet`` with these arguments, part by part."""
    c, n = head_channels, spatial_dims
    semantic_per_step = (1 if share_semantic_module else SCALES) * semantic_module(2 * c, n, semantic_widths)
    branches_per_step = SCALES * (
        attention_branch(c, n, position_attention(c, n)) + attention_branch(c, n, CHANNEL_ATTENTION)
    )
    return MultiScaleCounts(
        backbone=resnet_parameters(backbone, in_channels, n),
        projections=sum(conv_norm_prelu(width, c, 1, n) for width in stage_channels(backbone)),
        fuse=conv_norm_prelu(SCALES * c, c, 3, n) + conv_norm_prelu(c, c, 3, n) + conv_norm_prelu(c, c, 1, n),
        semantic=steps * semantic_per_step,
        branches=steps * branches_per_step,
        guidance=steps * SCALES * (conv(2 * c, c, 3, n) + conv(c, c, 1, n)),
        heads=2 * SCALES * conv(c, out_channels, 1, n),
    )
