"""The main job, ``attnseg demo``: build each network, run it on real-sized inputs, report.

Shapes, parameter counts, FLOPs and timings of the U-Net baseline and the Attention U-Net variants
in 2D (a batch of two 256 x 256 slices) and 3D (the paper's 160 x 160 x 96 inference volume).
"""

from __future__ import annotations

import time

import torch

from attnseg.networks.registry import NETWORKS, build_network
from attnseg.networks.utils import count_parameters
from attnseg.profiling import count_gflops

CASES = (
    ("2D", 2, (2, 1, 256, 256)),
    ("3D", 3, (1, 1, 160, 160, 96)),
)
CLASSES = 4


def run_demo() -> int:
    torch.manual_seed(0)
    print(f"attnseg demo: forward passes on random input, {torch.get_num_threads()} CPU thread(s)\n")
    header = (
        f"{'case':<4}  {'network':<24}  {'input':<22}  {'output':<22}  {'parameters':>10}  {'GFLOP':>7}  {'time':>8}"
    )
    print(header)
    print("-" * len(header))
    for label, dims, shape in CASES:
        for name, spec in NETWORKS.items():
            if dims not in spec.spatial_dims or not spec.accepts("feature_scale"):
                continue
            model = build_network(name, spatial_dims=dims, in_channels=1, out_channels=CLASSES).eval()
            x = torch.randn(shape)
            start = time.perf_counter()
            with torch.inference_mode():
                out_shape = tuple(model(x).shape)
            seconds = time.perf_counter() - start
            print(
                f"{label:<4}  {name:<24}  {shape!s:<22}  {out_shape!s:<22}  {count_parameters(model):>10,}  "
                f"{count_gflops(model, shape):>7.1f}  {seconds:>6.2f} s"
            )
    print("\nEvery output has the input's spatial size: the networks pad internally and crop back.")
    return 0
