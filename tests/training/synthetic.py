"""A synthetic 2D task for trainer tests (bright discs on noise), and a runnable training script used
by the kill-and-resume and torchrun tests:

    python tests/training/synthetic.py OUT [--resume] [--epochs N] [--dump-weights]
    torchrun --nproc_per_node=2 tests/training/synthetic.py OUT --dump-weights
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from attnseg.distributed import process_group
from attnseg.losses import DeepSupervisedLoss, SegmentationLoss
from attnseg.model_dir import ModelDir
from attnseg.networks import build_network
from attnseg.training.config import load_config
from attnseg.training.seeding import seed_everything, set_deterministic
from attnseg.training.trainer import Trainer

SIZE = 32


def disc_sample(index: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(index)
    centre = torch.randint(8, SIZE - 8, (2,), generator=generator)
    radius = 3 + int(torch.randint(0, 5, (1,), generator=generator))
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    label = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2).long()
    image = label.float() + 0.3 * torch.randn(SIZE, SIZE, generator=generator)
    return {"image": image[None], "label": label}


class DiscDataset(Dataset):
    """Fixed samples, plus a random flip drawn from the global torch generator (exercises reseeding)."""

    def __init__(self, count: int = 64) -> None:
        self.samples = [disc_sample(i) for i in range(count)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        if torch.rand(()) < 0.5:
            return {"image": sample["image"].flip(-1), "label": sample["label"].flip(-1)}
        return sample


def dice_validator(count: int = 8):
    samples = [disc_sample(1000 + i) for i in range(count)]

    def validate(model: torch.nn.Module) -> dict[str, float]:
        with torch.no_grad():
            images = torch.stack([s["image"] for s in samples])
            labels = torch.stack([s["label"] for s in samples])
            pred = model(images).argmax(1)
        inter = ((pred == 1) & (labels == 1)).sum().item()
        dice = 2 * inter / max((pred == 1).sum().item() + (labels == 1).sum().item(), 1)
        return {"val_dice_mean": dice, "val_dice_disc": dice}

    return validate


def make_trainer(out: Path, overrides: list[str] | None = None, validate: bool = True, **kwargs) -> Trainer:
    config = load_config(
        None,
        [
            "network.features=[4,8,16]",
            "data.batch_size=4",
            "training.epochs=3",
            "training.iterations_per_epoch=4",
            "training.deterministic=true",
            "optimizer.lr=0.01",
            *(overrides or []),
        ],
    )
    seed_everything(config.training.seed)
    set_deterministic(config.training.deterministic)
    model = build_network(config.network.name, in_channels=1, out_channels=2, **config.network.kwargs())
    loss = DeepSupervisedLoss(SegmentationLoss(config.loss.name))
    return Trainer(
        config,
        model,
        loss,
        DiscDataset(),
        ModelDir(out),
        validate=dice_validator() if validate else None,
        show_progress=False,
        **kwargs,
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--dump-weights", action="store_true", help="each rank writes rank<r>.pt into OUT")
    parser.add_argument("--stall", help="RANK:EPOCH:SECONDS: that rank sleeps at the start of that (0-based) epoch")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    timeout = load_config(None, args.set).training.dist_timeout
    with process_group(torch.device("cpu"), timeout) as context:
        _train_rank(args, context)


def _train_rank(args: argparse.Namespace, context) -> None:
    trainer = make_trainer(args.out, args.set, context=context)
    if args.stall:
        _stall(trainer, context.rank, *(int(v) for v in args.stall.split(":")))
    trainer.fit(resume=args.resume)
    trainer.close()
    if args.dump_weights:
        torch.save(trainer.network.state_dict(), args.out / f"rank{context.rank}.pt")


def _stall(trainer: Trainer, rank: int, stalled_rank: int, epoch: int, seconds: int) -> None:
    """Make one rank stop answering the others for a while (a stuck data loader, a slow file system)."""
    run_epoch = trainer._train_one_epoch

    def slow(current: int) -> float:
        if rank == stalled_rank and current == epoch:
            time.sleep(seconds)
        return run_epoch(current)

    trainer._train_one_epoch = slow


if __name__ == "__main__":
    main(sys.argv[1:])
