"""Time to segment one 256 x 256 x 160 volume with a 2D Attention U-Net of the demo's size.

    .venv/bin/python benchmarks/predict_speed.py [--repeats 2] [--threads N]

The whole ``Predictor.predict_image`` path is timed (preprocessing, 160 axial slices through the
network, probabilities back on the scan's grid, argmax): one slice per forward pass in PyTorch's default
memory layout (the baseline), larger batches, the predictor's default (4 slices per forward in the
channels-last layout), and that with mirroring TTA (4 flips). The weights are random: speed does not
depend on them. Printed as a Markdown table with speed-ups over the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attnseg.data import Geometry, Image, Plan
from attnseg.data.plan import ChannelNormalization
from attnseg.inference.predictor import Predictor
from attnseg.model_dir import ModelDir
from attnseg.networks.registry import build_network

SHAPE = (256, 256, 160)
LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2}


CASES = [
    ("1 slice per forward, contiguous layout (baseline)", {"batch_size": 1, "contiguous": True}),
    ("16 slices per forward, contiguous layout", {"batch_size": 16, "contiguous": True}),
    ("4 slices per forward, channels-last (default)", {}),
    ("default + mirroring TTA (4 flips)", {"mirror": True}),
]


CASES = [
    ("1 slice per forward, contiguous layout (baseline)", {"batch_size": 1, "contiguous": True}),
    ("16 slices per forward, contiguous layout", {"batch_size": 16, "contiguous": True}),
    ("4 slices per forward, channels-last (default)", {}),
    ("default + mirroring TTA (4 flips)", {"mirror": True}),
]


def make_model_dir(path: Path) -> ModelDir:
    """A model directory like the demo's (2D Attention U-Net, feature_scale 4), on a 1 mm plan."""
    plan = Plan(
        spatial_dims=2,
        image_dims=3,
        target_spacing=(1.0, 1.0, None),
        slice_axis=2,
        patch_size=SHAPE[:2],
        normalization=[ChannelNormalization("zscore")],
        labels=LABELS,
        channel_names=["T1"],
    )
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "feature_scale": 4, "aux_outputs": True}
    model_dir = ModelDir(path)
    model_dir.write_description("{}\n", {"name": "attention_unet", "kwargs": kwargs}, plan.to_dict(), LABELS)
    model_dir.save_weights(build_network("attention_unet", **kwargs))
    return model_dir


def time_case(predictor: Predictor, image: Image, repeats: int) -> float:
    predictor.predict_image(image)  # warm-up: allocator and kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict_image(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = Image(rng.normal(100, 20, (1, *SHAPE)).astype(np.float32), Geometry.create((1.0, 1.0, 1.0)))
    with tempfile.TemporaryDirectory() as folder:
        model_dir = make_model_dir(Path(folder) / "model")
        rows = []
        for name, options in CASES:
            predictor = Predictor([model_dir.path], device="cpu", batch_size=options.get("batch_size"))
            predictor.mirror = options.get("mirror", False)
            if options.get("contiguous"):  # undo the predictor's channels-last layout: the naive baseline
                for loaded in predictor.models:
                    loaded.network.to(memory_format=torch.contiguous_format)
            rows.append((name, time_case(predictor, image, args.repeats)))
    baseline = rows[0][1]
    print(
        f"2D Attention U-Net (feature_scale 4), one {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} volume, "
        f"{torch.get_num_threads()} CPU thread(s), median of {args.repeats}\n"
    )
    print("| setting | seconds | speed-up |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {baseline / seconds:.2f}x |")


if __name__ == "__main__":
    main()
