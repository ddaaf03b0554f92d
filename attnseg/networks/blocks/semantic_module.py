"""The semantic encoder-decoder of the guided attention module (Sinha & Dolz, JBHI 2020;
``semanticModule`` in the authors' code).

Two encoder levels (double 3x3 conv + norm + ReLU, then max-pool 2), channels d -> 2d -> 4d, give the
latent z (4d, H/4, W/4); two decoder levels (double 3x3 conv + norm + ReLU, then a 2x2 stride-2
transposed conv), channels 4d -> 2d -> d, reconstruct the input (d, H, W), no output activation.
Beyond the paper, ``widths`` narrows the two levels (the CPU preset's d -> d -> 2d).
3D is the same with 3x3x3 convs, 2x2x2 pooling and 2x2x2 transposed convs (latent (4d, D/4, H/4, W/4)).
The guided loss compares the latents of consecutive refinement steps; the reconstruction loss compares
the reconstruction with the module's input.

Deviation: the authors return the latent flattened over the whole batch; we keep its shape (B, 4d,
H/4, W/4) (the MSE is the same). Both resizes (to the first encoder level, and to the input) are
no-ops for sizes divisible by 4, as inside the network; they make other sizes work too.

``forward(x, chunks=k)`` runs the module on k inputs stacked along the batch as if it ran on each
separately (the network's four scales share one module): bigger matrix products, same maths, see
``run_in_chunks``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from attnseg.networks.blocks.conv import DoubleConv, NormName, max_pool, resize_to, transposed_conv_layer


def run_in_chunks(module: nn.Module, x: torch.Tensor, chunks: int) -> torch.Tensor:
    """``module`` on ``chunks`` inputs stacked along the batch, as if it ran on each separately.

    Every layer of a (nested) ``nn.Sequential`` but batch norm is per sample, so it runs once on the
    stack; a batch-norm layer that uses batch statistics (training mode) normalises each chunk with
    its own and updates its running statistics chunk after chunk, exactly as separate calls would.
    """
    if chunks == 1:
        return module(x)
    if isinstance(module, nn.Sequential):
        for layer in module:
            x = run_in_chunks(layer, x, chunks)
        return x
    if isinstance(module, _BatchNorm) and (module.training or module.running_mean is None):
        return torch.cat([module(part) for part in x.chunk(chunks)])
    return module(x)


class SemanticModule(nn.Module):
    """Encoder-decoder returning (latent, reconstruction); 2D or 3D.

    Args:
        channels: d, the input width (the network uses 2 x its head width, i.e. 128).
        norm: normalisation of the conv blocks (the authors': batch).
        spatial_dims: 2 or 3.
        widths: the two encoder levels' widths (the decoder mirrors them); ``None``: the authors'
            (2d, 4d). Narrower levels are for the CPU preset: at (d, 2d) a training step of
            ``ms_guided_cpu`` took a quarter less time (docs/choosing-a-network.md).
    """

    def __init__(
        self, channels: int, norm: NormName = "batch", spatial_dims: int = 2, widths: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        if widths is not None and (len(widths) != 2 or min(widths) < 1):
            raise ValueError(f"semantic_widths must be two positive widths, got {widths!r}")
        d, n = channels, spatial_dims
        first, second = widths or (2 * d, 4 * d)
        self.enc1 = nn.Sequential(DoubleConv(n, d, first, norm), max_pool(n))
        self.enc2 = nn.Sequential(DoubleConv(n, first, second, norm), max_pool(n))
        self.dec2 = nn.Sequential(DoubleConv(n, second, first, norm), transposed_conv_layer(n, first, first))
        self.dec1 = nn.Sequential(DoubleConv(n, first, d, norm), transposed_conv_layer(n, d, d))

    def forward(self, x: torch.Tensor, chunks: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent, reconstruction) of ``x``, which holds ``chunks`` inputs stacked along the batch."""
        enc1 = run_in_chunks(self.enc1, x, chunks)
        latent = run_in_chunks(self.enc2, enc1, chunks)
        dec2 = resize_to(run_in_chunks(self.dec2, latent, chunks), enc1.shape[2:])
        reconstruction = resize_to(run_in_chunks(self.dec1, dec2, chunks), x.shape[2:])
        return latent, reconstruction
