"""Time to segment one 256 x 256 x 160 volume with a 2D Attention U-Net of the demo's size.

    .venv/bin/python -m benchmarks.predict_speed [--repeats 2] [--threads N]

The whole ``Predictor.predict_image`` path is timed (preprocessing, 160 axial slices through the
network, probabilities back on the scan's grid, argmax): one slice per forward pass in PyTorch's default
memory layout in fp32 (the baseline), larger batches, the predictor's default for a model trained in
fp32 (4 slices per forward, channels-last), the same under bf16 autocast (what it runs for a model whose
training chose bf16 on this kind of CPU, or with ``--amp bf16``; CPUs with bf16 kernels only), and the
default with mirroring TTA (4 flips). The weights are random: speed does not depend on them. Printed as
a Markdown table with speed-ups over the baseline.
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
from attnseg.runtime import cpu_has_bf16
from benchmarks.report import header, markdown_table

SHAPE = (256, 256, 160)
LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2}


CASES = [
    ("1 slice per forward, contiguous layout, fp32 (baseline)", {"batch_size": 1, "contiguous": True}),
    ("16 slices per forward, contiguous layout, fp32", {"batch_size": 16, "contiguous": True}),
    ("4 slices per forward, channels-last, fp32 (default)", {}),
    ("4 slices per forward, channels-last, bf16 autocast", {"amp": "bf16"}),
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
            if options.get("amp") == "bf16" and not cpu_has_bf16():
                continue
            predictor = Predictor(
                [model_dir.path],
                device="cpu",
                mirror=options.get("mirror", False),
                batch_size=options.get("batch_size"),
                amp=options.get("amp", "off"),
            )
            if options.get("contiguous"):  # undo the predictor's channels-last layout: the naive baseline
                for loaded in predictor.models:
                    loaded.network.to(memory_format=torch.contiguous_format)
            rows.append((name, time_case(predictor, image, args.repeats)))
    baseline = rows[0][1]
    print(header(f"Predicting a {SHAPE[0]} x {SHAPE[1]} x {SHAPE[2]} volume (CPU)"))
    print(f"2D Attention U-Net (feature_scale 4, 3 classes), median of {args.repeats}\n")
    table = [[name, f"{seconds:.1f}", f"{baseline / seconds:.2f}x"] for name, seconds in rows]
    print(markdown_table(["setting", "seconds", "speed-up"], table))


if __name__ == "__main__":
    main()
