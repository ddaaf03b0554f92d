"""Multi-scale self-guided attention network (Sinha & Dolz, "Multi-scale self-guided attention for
medical image segmentation", IEEE JBHI 2020, arXiv:1906.02849), 2D.

Follows the authors' code (sinAshish/Multi-Scale-Attention, ``DAF_stack``):

* a ResNet/ResNeXt backbone; its four stages (strides 4, 8, 16, 32) are each projected to 64 channels
  (1x1 conv + norm + PReLU) and resized bilinearly to the stride-4 grid: the features F'_s;
* F_MS, the multi-scale fusion: [3x3, 3x3, 1x1] conv + norm + PReLU over concat(F'_4, F'_3, F'_2, F'_1);
* per refinement step and scale, on X_s = [F'_s, F_MS] (step 1) or [F'_s, A_s ⊙ F_MS] (later steps):
  a position and a channel attention branch (3x3 conv-norm-PReLU, PAM or CAM, 3x3 conv-norm-PReLU; the
  attention modules start as the identity, γ = 0), the semantic encoder-decoder (latent z, reconstruction
  R), and A_s = Conv1x1((PAM + CAM) ⊙ Conv3x3(R)); one encoder-decoder per step is shared by the four
  scales (``share_semantic_module=True``), PAM/CAM and the fusion convs are per scale and step;
* heads (1x1 conv to K classes) on each F'_s and on each scale's output of the last step, all resized
  to the input size; the prediction is the mean of the four refined logits.

Where we deviate, and why:

* no dead modules: the authors build unused layers (``conv6_*``, ``conv7_*``, ``attention1-4``,
  ``refine1-4``, 0.96 M parameters), which breaks DistributedDataParallel; every parameter here is used;
* the backbone has no classifier (``fc``), for the same reason;
* configurable classes, input channels, backbone, head width, number of refinement steps (the authors
  hard-code 5 classes, 1 channel, 2 steps) and per-scale encoder-decoders;
* any input size: zero-padded at the far end to a multiple of 32, outputs cropped back (the authors
  need multiples of 32);
* position attention through ``scaled_dot_product_attention`` by default (same formula, no N x N map
  stored), optional key/value pooling, and a pre-flight memory check (``memory_limit_gib``);
* the eval output averages the refined logits on the stride-4 grid and resizes once; the authors resize
  each of the four, which is the same up to rounding (bilinear resizing is linear).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from attnseg.networks.backbones.resnet import build_backbone
from attnseg.networks.blocks.channel_attention import ChannelAttention
from attnseg.networks.blocks.conv import NORM_TYPES, ConvNormAct, NormName, conv_layer, resize_to
from attnseg.networks.blocks.position_attention import PositionAttention, PositionAttentionImpl, attention_map_bytes
from attnseg.networks.blocks.semantic_module import SemanticModule
from attnseg.networks.memory import GIB, MemoryBudgetError, MemoryEstimate, estimate_step_memory
from attnseg.networks.outputs import GuidedAttentionOutput
from attnseg.networks.utils import check_input, crop_to, downsampled_size, pad_to_multiple

SCALES = 4
ATTENTION_STRIDE = 4


class AttentionBranch(nn.Sequential):
    """The authors' ``PAM_CAM_Layer``: 3x3 conv-norm-PReLU (2C -> C), PAM or CAM, 3x3 conv-norm-PReLU."""

    def __init__(self, channels: int, attention: nn.Module, norm: NormName = "batch") -> None:
        super().__init__(
            ConvNormAct(2, 2 * channels, channels, 3, norm, act=nn.PReLU),
            attention,
            ConvNormAct(2, channels, channels, 3, norm, act=nn.PReLU),
        )


class GuidedAttentionStep(nn.Module):
    """One refinement step of the guided attention module, over every scale.

    For scale s and input X_s (2C channels): (z, R) = SemanticModule(X_s) and
    A_s = Conv1x1(C -> C)((PAM_s(X_s) + CAM_s(X_s)) ⊙ Conv3x3(2C -> C)(R)); both convs with bias, no norm.
    """

    def __init__(
        self,
        channels: int,
        share_semantic_module: bool = True,
        norm: NormName = "batch",
        position_attention: PositionAttentionImpl = "sdpa",
        kv_pool: int = 1,
    ) -> None:
        super().__init__()
        self.position = nn.ModuleList(
            AttentionBranch(channels, PositionAttention(channels, 8, position_attention, kv_pool), norm)
            for _ in range(SCALES)
        )
        self.channel = nn.ModuleList(AttentionBranch(channels, ChannelAttention(), norm) for _ in range(SCALES))
        self.semantic = nn.ModuleList(
            SemanticModule(2 * channels, norm) for _ in range(1 if share_semantic_module else SCALES)
        )
        self.reconstruction_conv = nn.ModuleList(conv_layer(2, 2 * channels, channels, 3) for _ in range(SCALES))
        self.fuse = nn.ModuleList(conv_layer(2, channels, channels, 1) for _ in range(SCALES))

    def forward(self, x: torch.Tensor, scale: int) -> dict[str, torch.Tensor]:
        """Returns ``guided`` (A_s), ``latent``, ``reconstruction``, ``position`` and ``channel``."""
        semantic = self.semantic[scale if len(self.semantic) > 1 else 0]
        latent, reconstruction = semantic(x)
        position = self.position[scale](x)
        channel = self.channel[scale](x)
        guided = self.fuse[scale]((position + channel) * self.reconstruction_conv[scale](reconstruction))
        return {
            "guided": guided,
            "latent": latent,
            "reconstruction": reconstruction,
            "position": position,
            "channel": channel,
        }


def init_xavier(module: nn.Module) -> None:
    """The authors' initialisation: Xavier-normal weights for every (transposed) convolution, backbone
    included; norm weight ~ N(1, 0.02), bias 0; conv biases keep PyTorch's default."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_normal_(m.weight)
        elif isinstance(m, NORM_TYPES) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class MultiScaleGuidedAttentionNet(nn.Module):
    """Multi-scale self-guided attention network ("MS-Dual-Guided"), 2D.

    Args:
        spatial_dims: must be 2 (the network is 2D, as the paper's); accepted so that every network
            takes the same arguments.
        in_channels: input channels.
        out_channels: number of classes K, background included.
        backbone: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` or ``resnext101_32x8d`` (the
            authors' code; the paper says ResNet-101).
        backbone_width: stem width of the backbone (64 = the standard networks; smaller for tests).
        head_channels: C, the width of the projected features and attention modules (the paper: 64).
            The semantic encoder-decoder works on 2C -> 4C -> 8C channels.
        steps: refinement steps of the guided attention module (the paper: 2).
        share_semantic_module: one encoder-decoder per step shared by the four scales (the authors'
            code), or one per scale and step.
        norm: normalisation of the head (the backbone always uses batch norm, as its weights do).
        position_attention: ``"sdpa"`` (memory-efficient, default) or ``"naive"`` (literal formula).
        kv_pool: average-pool keys and values of the position attention by this factor (1: off).
        pretrained_backbone: path of a local torchvision-layout state dict for the backbone (e.g.
            ImageNet weights); ``None``: random init, as the authors.
        memory_limit_gib: if set, every new input shape is first replayed on the meta device and a
            ``MemoryBudgetError`` is raised, before anything is allocated, when the pass (forward and
            backward in training) would need more than this many GiB.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        backbone: str = "resnext101_32x8d",
        backbone_width: int = 64,
        head_channels: int = 64,
        steps: int = 2,
        share_semantic_module: bool = True,
        norm: NormName = "batch",
        position_attention: PositionAttentionImpl = "sdpa",
        kv_pool: int = 1,
        pretrained_backbone: str | Path | None = None,
        memory_limit_gib: float | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"{type(self).__name__} is 2D only (the paper's); got spatial_dims={spatial_dims}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if head_channels < 1 or out_channels < 1:
            raise ValueError(f"head_channels and out_channels must be positive, got {head_channels}, {out_channels}")
        if memory_limit_gib is not None and memory_limit_gib <= 0:
            raise ValueError(f"memory_limit_gib must be positive, got {memory_limit_gib}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.head_channels = head_channels
        self.num_steps = steps
        self.memory_limit_gib = memory_limit_gib
        self._estimating = False
        self._checked: dict[tuple, MemoryEstimate] = {}

        c = head_channels
        self.backbone = build_backbone(backbone, in_channels, backbone_width)
        self.projections = nn.ModuleList(
            ConvNormAct(2, width, c, 1, norm, act=nn.PReLU) for width in self.backbone.out_channels
        )
        self.fuse = nn.Sequential(
            ConvNormAct(2, SCALES * c, c, 3, norm, act=nn.PReLU),
            ConvNormAct(2, c, c, 3, norm, act=nn.PReLU),
            ConvNormAct(2, c, c, 1, norm, act=nn.PReLU),
        )
        self.refinement = nn.ModuleList(
            GuidedAttentionStep(c, share_semantic_module, norm, position_attention, kv_pool) for _ in range(steps)
        )
        self.feature_heads = nn.ModuleList(conv_layer(2, c, out_channels, 1) for _ in range(SCALES))
        self.refined_heads = nn.ModuleList(conv_layer(2, c, out_channels, 1) for _ in range(SCALES))
        init_xavier(self)
        if pretrained_backbone is not None:
            self.load_pretrained_backbone(pretrained_backbone)

    @property
    def size_multiple(self) -> int:
        """Inputs are padded internally to a multiple of this along every spatial axis."""
        return 32

    def load_pretrained_backbone(self, path: str | Path) -> list[str]:
        """Load torchvision-layout backbone weights from a local file (see ``ResNetBackbone.load_pretrained``)."""
        return self.backbone.load_pretrained(path)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> torch.Tensor | GuidedAttentionOutput:
        """Segment ``x`` of shape (B, in_channels, H, W).

        Returns the logits (B, K, H, W) in eval mode, a ``GuidedAttentionOutput`` in training mode or
        when ``return_attention=True``.
        """
        check_input(x, 2, self.in_channels, type(self).__name__)
        size = list(x.shape[2:])
        x = pad_to_multiple(x, self.size_multiple)
        if self.memory_limit_gib is not None and not self._estimating and not torch.compiler.is_compiling():
            self.check_memory(tuple(x.shape), x.dtype)  # before anything large is allocated
        padded = list(x.shape[2:])

        features, fused = self._multiscale_features(x)
        results = self._refine(features, fused)
        refined = [head(r["guided"]) for head, r in zip(self.refined_heads, results[-1], strict=True)]
        if not self.training and not return_attention:
            return crop_to(resize_to(torch.stack(refined).mean(0), padded), size)

        def to_input(logits: torch.Tensor) -> torch.Tensor:
            return crop_to(resize_to(logits, padded), size)

        refined_logits = [to_input(r) for r in refined]
        grid = downsampled_size(size, ATTENTION_STRIDE)
        attention = {}
        if return_attention:
            for t, step in enumerate(results, start=1):
                for s, r in enumerate(step, start=1):
                    for kind in ("position", "channel", "guided"):
                        attention[f"step{t}.scale{s}.{kind}"] = crop_to(r[kind], grid)
        return GuidedAttentionOutput(
            logits=torch.stack(refined_logits).mean(0),
            feature_logits=[to_input(head(f)) for head, f in zip(self.feature_heads, features, strict=True)],
            refined_logits=refined_logits,
            latents=[[r["latent"] for r in step] for step in results],
            module_inputs=[[r["input"] for r in step] for step in results],
            reconstructions=[[r["reconstruction"] for r in step] for step in results],
            attention=attention,
        )

    def _multiscale_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """F'_s (finest first), each C channels on the stride-4 grid, and their fusion F_MS."""
        taps = self.backbone(x)
        grid = taps[0].shape[2:]
        features = [resize_to(project(t), grid) for project, t in zip(self.projections, taps, strict=True)]
        fused = self.fuse(torch.cat(features[::-1], dim=1))  # the authors' order: coarsest first
        return features, fused

    def _refine(self, features: list[torch.Tensor], fused: torch.Tensor) -> list[list[dict[str, torch.Tensor]]]:
        """Run every refinement step; ``results[step][scale]`` holds the step's tensors for that scale."""
        results: list[list[dict[str, torch.Tensor]]] = []
        guide: list[torch.Tensor] | None = None
        for step in self.refinement:
            outputs = []
            for s, feature in enumerate(features):
                context = fused if guide is None else guide[s] * fused
                module_input = torch.cat([feature, context], dim=1)
                outputs.append({**step(module_input, s), "input": module_input})
            guide = [r["guided"] for r in outputs]
            results.append(outputs)
        return results

    def check_memory(self, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> MemoryEstimate:
        """Estimate the memory of a pass on ``input_shape`` (padded), raise ``MemoryBudgetError`` if over
        ``memory_limit_gib``. A training step (forward + backward) when the module is in training mode
        and gradients are enabled, a forward pass otherwise. Cached per shape and mode."""
        backward = self.training and torch.is_grad_enabled()
        key = (input_shape, dtype, backward)
        if key not in self._checked:
            self._estimating = True
            try:
                self._checked[key] = estimate_step_memory(self, input_shape, backward=backward, dtype=dtype)
            finally:
                self._estimating = False
        estimate = self._checked[key]
        if self.memory_limit_gib is not None and estimate.total > self.memory_limit_gib * GIB:
            raise MemoryBudgetError(self._budget_message(input_shape, estimate, backward))
        return estimate

    def _budget_message(self, shape: tuple[int, ...], estimate: MemoryEstimate, backward: bool) -> str:
        what = "a training step" if backward else "a forward pass"
        pam = self.refinement[0].position[0][1]
        grid = [s // ATTENTION_STRIDE for s in shape[2:]]
        n = grid[0] * grid[1]
        m = downsampled_size(grid, pam.kv_pool)
        maps = self.num_steps * SCALES * attention_map_bytes(shape[0], n, m[0] * m[1])
        if pam.implementation == "naive":
            hint = (
                f"the naive position attention keeps {self.num_steps * SCALES} maps of {n}x{m[0] * m[1]} "
                f"({maps / GIB:.1f} GiB): use position_attention='sdpa', kv_pool=2, a smaller batch or input"
            )
        else:
            hint = "use a smaller batch or input"
        return (
            f"{type(self).__name__}: {what} on input {tuple(shape)} needs about {estimate.total_gib:.1f} GiB, "
            f"over the memory limit of {self.memory_limit_gib:g} GiB; {hint}"
        )
