"""Multi-scale self-guided attention network (Sinha & Dolz, "Multi-scale self-guided attention for
medical image segmentation", IEEE JBHI 2020, arXiv:1906.02849), in 2D (the paper's) and 3D.

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

3D (``spatial_dims=3``; neither the paper nor the authors have it) is the same network with a 3D
ResNet (cubic kernels, isotropic strides, see ``attnseg.networks.backbones``), 3x3x3 convolutions,
trilinear resizing, position attention over the D·H·W positions of the stride-4 grid (memory-efficient
attention is what makes it fit: 9,216 positions at 96 x 96 x 64, whose maps the naive form would store
as 8 x 324 MiB per image), channel attention over the same positions, and 3D encoder-decoders.

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

Beyond the paper, opt-in (``fine_stride``; off by default and in ``ms_guided_faithful``): a
high-resolution head (``attnseg.networks.blocks.fine_head``) that joins the mean of the refined
features with the backbone's stride-2 stem and predicts at stride 2 or 1 (at stride 1 with the image, or
with full-resolution features of it: ``fine_image_features``); it is then the prediction (and one more
supervised head), because the stride-4 grid caps thin-structure Dice (issue 20). With ``fine_residual``
its logits are a correction added to the paper's prediction (the mean of the refined logits), resized.
``semantic_widths`` narrows the encoder-decoders' two levels (the authors': twice and four times their
input's width), the largest part of the CPU preset's step (docs/ms-guided.md).

How it runs (the same maths as the authors' loop over scales, faster): the encoder-decoder shared by
the four scales runs once per step on the four inputs stacked along the batch, its batch-norm layers
normalising each scale's chunk with that chunk's statistics, in the authors' order, so outputs, gradients
and running statistics are those of four separate calls (``batch_scales``; bigger matrix products for
the convolutions, most of the network's work); and the activations are kept channels-last (NHWC /
NDHWC), the layout oneDNN's and cuDNN's fast convolution kernels use, whatever the layout of the input
and of the weights (``channels_last``). Both can be switched off, for comparison.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from attnseg.networks.backbones.resnet import build_backbone
from attnseg.networks.blocks.channel_attention import ChannelAttention
from attnseg.networks.blocks.conv import NORM_TYPES, ConvNormAct, NormName, conv_layer, resize_to
from attnseg.networks.blocks.fine_head import FineHead
from attnseg.networks.blocks.position_attention import PositionAttention, PositionAttentionImpl, attention_map_bytes
from attnseg.networks.blocks.scale_norm import split_batch_norms
from attnseg.networks.blocks.semantic_module import SemanticModule
from attnseg.networks.memory import GIB, MemoryBudgetError, MemoryEstimate, available_memory, estimate_step_memory
from attnseg.networks.outputs import GuidedAttentionOutput
from attnseg.networks.utils import check_input, crop_to, downsampled_size, pad_to_multiple

SCALES = 4
ATTENTION_STRIDE = 4
SIZE_MULTIPLE = 32  # the backbone's deepest stride; the encoder-decoder's 4 is covered by it
MemoryLimit = float | Literal["auto"] | None
ScaleNorm = Literal["shared", "per_scale"]


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


class AttentionBranch(nn.Sequential):
    """The authors' ``PAM_CAM_Layer``: 3x3 conv-norm-PReLU (2C -> C), PAM or CAM, 3x3 conv-norm-PReLU."""

    def __init__(self, channels: int, attention: nn.Module, norm: NormName = "batch", spatial_dims: int = 2) -> None:
        super().__init__(
            ConvNormAct(spatial_dims, 2 * channels, channels, 3, norm, act=nn.PReLU),
            attention,
            ConvNormAct(spatial_dims, channels, channels, 3, norm, act=nn.PReLU),
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
        spatial_dims: int = 2,
        scale_norm: ScaleNorm = "shared",
        semantic_widths: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        n = spatial_dims
        self.position = nn.ModuleList(
            AttentionBranch(channels, PositionAttention(channels, 8, position_attention, kv_pool, n), norm, n)
            for _ in range(SCALES)
        )
        self.channel = nn.ModuleList(AttentionBranch(channels, ChannelAttention(), norm, n) for _ in range(SCALES))
        self.semantic = nn.ModuleList(
            SemanticModule(2 * channels, norm, n, semantic_widths)
            for _ in range(1 if share_semantic_module else SCALES)
        )
        self.per_scale_norm = scale_norm == "per_scale"
        if self.per_scale_norm:
            if not share_semantic_module or norm != "batch":
                raise ValueError("scale_norm='per_scale' is for batch norm in an encoder-decoder shared by the scales")
            split_batch_norms(self.semantic[0], SCALES)
        self.reconstruction_conv = nn.ModuleList(conv_layer(n, 2 * channels, channels, 3) for _ in range(SCALES))
        self.fuse = nn.ModuleList(conv_layer(n, channels, channels, 1) for _ in range(SCALES))

    def forward(self, inputs: list[torch.Tensor], batch_scales: bool = True) -> list[dict[str, torch.Tensor]]:
        """For each scale's input X_s: ``guided`` (A_s), ``latent``, ``reconstruction``, ``position``,
        ``channel`` and ``input`` (X_s). ``batch_scales`` runs a shared encoder-decoder once on the
        stacked inputs (same result as one call per scale)."""
        if self.per_scale_norm and not batch_scales:
            raise ValueError("scale_norm='per_scale' needs the scales stacked (batch_scales=True)")
        if len(self.semantic) == 1 and batch_scales:
            latents, reconstructions = self.semantic[0](torch.cat(inputs), chunks=len(inputs))
            semantic = list(zip(latents.chunk(len(inputs)), reconstructions.chunk(len(inputs)), strict=True))
        else:
            semantic = [self.semantic[s if len(self.semantic) > 1 else 0](x) for s, x in enumerate(inputs)]
        results = []
        for s, (x, (latent, reconstruction)) in enumerate(zip(inputs, semantic, strict=True)):
            position = self.position[s](x)
            channel = self.channel[s](x)
            guided = self.fuse[s]((position + channel) * self.reconstruction_conv[s](reconstruction))
            results.append(
                {
                    "guided": guided,
                    "latent": latent,
                    "reconstruction": reconstruction,
                    "position": position,
                    "channel": channel,
                    "input": x,
                }
            )
        return results


def init_xavier(module: nn.Module) -> None:
    """The authors' initialisation: Xavier-normal weights for every (transposed) convolution, backbone
    included; norm weight ~ N(1, 0.02), bias 0; conv biases keep PyTorch's default."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.xavier_normal_(m.weight)
        elif isinstance(m, NORM_TYPES) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _check_settings(
    spatial_dims: int,
    steps: int,
    head_channels: int,
    out_channels: int,
    memory_limit_gib: MemoryLimit,
    fine_stride: int | None,
    fine_residual: bool,
) -> None:
    """Refuse settings the network cannot be built with, naming the setting."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"MultiScaleGuidedAttentionNet: spatial_dims must be 2 or 3, got {spatial_dims}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if head_channels < 1 or out_channels < 1:
        raise ValueError(f"head_channels and out_channels must be positive, got {head_channels}, {out_channels}")
    if fine_residual and fine_stride is None:
        raise ValueError("fine_residual corrects the fine head's prediction: it needs fine_stride (2 or 1)")
    if memory_limit_gib is not None and memory_limit_gib != "auto" and not memory_limit_gib > 0:
        raise ValueError(f"memory_limit_gib must be positive or 'auto', got {memory_limit_gib!r}")


def _tracing() -> bool:
    """Whether this pass is being recorded (torch.compile or torch.export, torch.jit.trace for a TorchScript
    export or a MONAI Bundle) rather than run: the memory check's functional call on the meta device cannot
    be traced by torch.jit, and a recorded check would not run again for the file's inputs anyway."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


class MultiScaleGuidedAttentionNet(nn.Module):
    """Multi-scale self-guided attention network ("MS-Dual-Guided"), 2D or 3D.

    Args:
        spatial_dims: 2 (the paper's) or 3.
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
        kv_pool: average-pool keys and values of the position attention by this factor along every
            axis (1: off).
        pretrained_backbone: path of a local torchvision-layout state dict for the backbone (e.g.
            ImageNet weights; a 3D network inflates 2D weights); ``None``: random init, as the authors.
        memory_limit_gib: if set, every new input shape is first replayed on the meta device and a
            ``MemoryBudgetError`` saying which setting to lower is raised, before anything is
            allocated, when the pass (forward and backward in training) would need more than this
            many GiB; ``"auto"``: the memory available on the device at the time of the check.
        batch_scales: run the encoder-decoder shared by the scales once on the stacked scales (same
            maths as one call per scale, faster); ``False`` for the literal loop.
        channels_last: keep activations channels-last (same maths; the fast layout of oneDNN and
            cuDNN convolutions); ``False`` keeps the input's layout.
        fine_stride: beyond the paper: ``2`` or ``1`` adds the high-resolution head (``FineHead``: the
            mean of the refined features joined with the backbone's stride-2 stem, at stride 2 or 1),
            whose logits are then the prediction; ``None`` (the paper): predict on the stride-4 grid.
        fine_channels: the high-resolution head's width (default: ``head_channels``).
        fine_image_features: with ``fine_stride=1``, the width of two full-resolution conv layers the
            image passes before the head joins it (0: the raw image is joined).
        fine_residual: the fine head corrects the coarse prediction instead of replacing it: its
            logits are added to the mean of the refined logits, resized to its grid. Which class a
            region is comes then from the stride-4 context (long-range, attended), where it is
            drawn from the fine head's local features.
        scale_norm: beyond the paper: ``"per_scale"`` gives the encoder-decoder shared by the scales one
            batch norm per scale (``ScaleBatchNorm``: own statistics and affine parameters, shared
            convolutions); ``"shared"`` (the authors'): one set of running statistics for all four.
        semantic_widths: beyond the paper: the encoder-decoder's two level widths (``None``: the
            authors' 4C and 8C, twice and four times its 2C input; the CPU preset halves them).
    """

    size_multiple: int = SIZE_MULTIPLE
    """Inputs are padded internally to a multiple of this along every spatial axis (a class attribute:
    the training plan reads it to size patches before the network is built)."""

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
        memory_limit_gib: MemoryLimit = None,
        batch_scales: bool = True,
        channels_last: bool = True,
        fine_stride: int | None = None,
        fine_channels: int | None = None,
        fine_image_features: int = 0,
        fine_residual: bool = False,
        scale_norm: ScaleNorm = "shared",
        semantic_widths: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        _check_settings(spatial_dims, steps, head_channels, out_channels, memory_limit_gib, fine_stride, fine_residual)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.head_channels = head_channels
        self.num_steps = steps
        self.memory_limit_gib = memory_limit_gib
        self.batch_scales = batch_scales
        self.channels_last = channels_last
        self._estimating = False
        self._checked: dict[tuple, MemoryEstimate] = {}

        c, n = head_channels, spatial_dims
        self.backbone = build_backbone(backbone, in_channels, backbone_width, spatial_dims)
        self.projections = nn.ModuleList(
            ConvNormAct(n, width, c, 1, norm, act=nn.PReLU) for width in self.backbone.out_channels
        )
        self.fuse = nn.Sequential(
            ConvNormAct(n, SCALES * c, c, 3, norm, act=nn.PReLU),
            ConvNormAct(n, c, c, 3, norm, act=nn.PReLU),
            ConvNormAct(n, c, c, 1, norm, act=nn.PReLU),
        )
        self.refinement = nn.ModuleList(
            GuidedAttentionStep(
                c, share_semantic_module, norm, position_attention, kv_pool, n, scale_norm, semantic_widths
            )
            for _ in range(steps)
        )
        self.feature_heads = nn.ModuleList(conv_layer(n, c, out_channels, 1) for _ in range(SCALES))
        self.refined_heads = nn.ModuleList(conv_layer(n, c, out_channels, 1) for _ in range(SCALES))
        self.fine_stride = fine_stride
        self.fine_residual = fine_residual
        if fine_stride is not None:
            width = fine_channels or c
            stem = self.backbone.conv1.out_channels
            self.fine_head = FineHead(
                c, stem, in_channels, width, out_channels, fine_stride, norm, n, fine_image_features
            )
        init_xavier(self)
        if pretrained_backbone is not None:
            self.load_pretrained_backbone(pretrained_backbone)

    def load_pretrained_backbone(self, path: str | Path) -> list[str]:
        """Load torchvision-layout backbone weights from a local file (see ``ResNetBackbone.load_pretrained``)."""
        return self.backbone.load_pretrained(path)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> torch.Tensor | GuidedAttentionOutput:
        """Segment ``x`` of shape (B, in_channels, *S), S = (H, W) or (D, H, W).

        Returns the logits (B, K, *S) in eval mode, a ``GuidedAttentionOutput`` in training mode or
        when ``return_attention=True``.
        """
        check_input(x, self.spatial_dims, self.in_channels, type(self).__name__)
        size = list(x.shape[2:])
        x = pad_to_multiple(x, self.size_multiple)
        if self.memory_limit_gib is not None and not self._estimating and not _tracing():
            self.check_memory(tuple(x.shape), x.dtype)  # before anything large is allocated
        padded = list(x.shape[2:])

        stem, features, fused = self._multiscale_features(x)
        results = self._refine(features, fused)
        refined = [head(r["guided"]) for head, r in zip(self.refined_heads, results[-1], strict=True)]
        if self.fine_stride is not None:
            context = torch.stack([r["guided"] for r in results[-1]]).mean(0)
            fine = self.fine_head(context, stem, x)
            if self.fine_residual:
                fine = fine + resize_to(torch.stack(refined).mean(0), fine.shape[2:])
            if not self.training and not return_attention:
                return crop_to(resize_to(fine, padded), size)
        if not self.training and not return_attention:
            return crop_to(resize_to(torch.stack(refined).mean(0), padded), size)

        def to_input(logits: torch.Tensor) -> torch.Tensor:
            return crop_to(resize_to(logits, padded), size)

        refined_logits = [to_input(r) for r in refined]
        fine_logits = [to_input(fine)] if self.fine_stride is not None else []
        grid = downsampled_size(size, ATTENTION_STRIDE)
        attention = {}
        if return_attention:
            for t, step in enumerate(results, start=1):
                for s, r in enumerate(step, start=1):
                    for kind in ("position", "channel", "guided"):
                        attention[f"step{t}.scale{s}.{kind}"] = crop_to(r[kind], grid)
        return GuidedAttentionOutput(
            logits=fine_logits[0] if fine_logits else torch.stack(refined_logits).mean(0),
            feature_logits=[to_input(head(f)) for head, f in zip(self.feature_heads, features, strict=True)],
            refined_logits=refined_logits,
            latents=[[r["latent"] for r in step] for step in results],
            module_inputs=[[r["input"] for r in step] for step in results],
            reconstructions=[[r["reconstruction"] for r in step] for step in results],
            attention=attention,
            fine_logits=fine_logits,
        )

    def _multiscale_features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, list[torch.Tensor], torch.Tensor]:
        """The backbone's stride-2 stem (with the fine head only, else None), F'_s (finest first), each
        C channels on the stride-4 grid, and their fusion F_MS."""
        stem, taps = self._backbone_taps(x)
        grid = taps[0].shape[2:]
        features = [
            self._lay_out(resize_to(project(t), grid)) for project, t in zip(self.projections, taps, strict=True)
        ]
        fused = self.fuse(torch.cat(features[::-1], dim=1))  # the authors' order: coarsest first
        return stem, features, fused

    def _backbone_taps(self, x: torch.Tensor) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """The backbone's taps; with the fine head also its stem (conv1, bn1, ReLU: stride 2), which
        the backbone's own forward does not return. Same layers, same order as ``ResNetBackbone.forward``."""
        if self.fine_stride is None:
            return None, self.backbone(x, self._layout)
        b = self.backbone
        stem = self._lay_out(b.conv1(x))
        stem = b.relu(b.bn1(stem))
        y = b.maxpool(stem)
        taps = []
        for layer in (b.layer1, b.layer2, b.layer3, b.layer4):
            y = layer(y)
            taps.append(y)
        return stem, taps

    @property
    def _layout(self) -> torch.memory_format | None:
        return channels_last_format(self.spatial_dims) if self.channels_last else None

    def _lay_out(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` channels-last (a no-op when it is). Layouts drift where a tensor is laid out both ways
        at once (a 1x1(x1) tap, resized) or where PyTorch runs a convolution outside oneDNN (1x1 kernels
        on one thread), so the network lays out again where the big convolutions start."""
        return x if self._layout is None else x.contiguous(memory_format=self._layout)

    def _refine(self, features: list[torch.Tensor], fused: torch.Tensor) -> list[list[dict[str, torch.Tensor]]]:
        """Run every refinement step; ``results[step][scale]`` holds the step's tensors for that scale."""
        results: list[list[dict[str, torch.Tensor]]] = []
        guide: list[torch.Tensor] | None = None
        for step in self.refinement:
            contexts = [fused] * len(features) if guide is None else [g * fused for g in guide]
            inputs = [self._lay_out(torch.cat([f, c], dim=1)) for f, c in zip(features, contexts, strict=True)]
            outputs = step(inputs, self.batch_scales)
            guide = [r["guided"] for r in outputs]
            results.append(outputs)
        return results

    # the pre-flight memory check ---------------------------------------------------------------------

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
        limit = self.memory_limit_bytes()
        if limit is not None and estimate.total > limit:
            raise MemoryBudgetError(self._budget_message(input_shape, estimate, backward, limit))
        return estimate

    def memory_limit_bytes(self) -> int | None:
        """``memory_limit_gib`` in bytes; for ``"auto"``, what the device has available now plus the
        parameters (already resident), or None where that cannot be read."""
        if self.memory_limit_gib is None:
            return None
        if self.memory_limit_gib != "auto":
            return int(self.memory_limit_gib * GIB)
        parameter = next(self.parameters())
        free = available_memory(parameter.device)
        if free is None:
            return None
        resident = sum(t.numel() * t.element_size() for t in (*self.parameters(), *self.buffers()))
        return free + resident

    def _budget_message(self, shape: tuple[int, ...], estimate: MemoryEstimate, backward: bool, limit: int) -> str:
        what = "a training step" if backward else "a forward pass"
        source = "available" if self.memory_limit_gib == "auto" else "the memory limit of"
        return (
            f"{type(self).__name__}: {what} on input {tuple(shape)} needs about {estimate.total_gib:.1f} GiB, "
            f"over {source} {limit / GIB:.3g} GiB; {self._what_to_lower(shape, estimate, limit)}"
        )

    def _what_to_lower(self, shape: tuple[int, ...], estimate: MemoryEstimate, limit: int) -> str:
        """Name the setting to lower, with a value that should fit: the naive attention maps first, then
        the batch size, then the input (patch) size. Activations grow about linearly with both, so the
        values come from scaling the estimate; they are approximate, the check runs again on the next pass."""
        pam = self.refinement[0].position[0][1]
        grid = [s // ATTENTION_STRIDE for s in shape[2:]]
        n, m = math.prod(grid), math.prod(downsampled_size(grid, pam.kv_pool))
        maps = self.num_steps * SCALES * attention_map_bytes(shape[0], n, m)
        if pam.implementation == "naive" and maps > 0.25 * estimate.peak_live:
            return (
                f"the naive position attention keeps {self.num_steps * SCALES} maps of {n}x{m} "
                f"({maps / GIB:.1f} GiB): use position_attention='sdpa', kv_pool=2, a smaller batch or input"
            )
        batch = shape[0]
        per_sample = estimate.peak_live / batch
        fits = max(limit - estimate.parameters, 0) / per_sample  # samples of this size that fit
        if batch > 1 and fits >= 1:
            return f"lower the batch size from {batch} to {math.floor(fits)} (data.batch_size)"
        side = fits ** (1 / self.spatial_dims)  # per-axis shrink factor of one sample that fits
        smaller = [int(s * side) // SIZE_MULTIPLE * SIZE_MULTIPLE for s in shape[2:]]
        if min(smaller) >= SIZE_MULTIPLE:
            size = " x ".join(map(str, smaller))
            return f"use batch size 1 and an input (data.patch_size) of about {size}, or a smaller head_channels"
        return "use a smaller head_channels or backbone, or a machine with more memory"
