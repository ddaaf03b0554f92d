"""Reproducibility: seeds, deterministic mode, and per-epoch / per-worker reseeding.

Every epoch starts from a seed derived from (run seed, epoch). That makes a resumed run repeat the
interrupted epoch exactly as the uninterrupted run did, without relying on RNG state that was
in flight when the process died.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from attnseg.errors import ConfigError

_MASK = 2**31 - 1


def derive_seed(*parts: int) -> int:
    """A 31-bit seed mixing several integers (run seed, epoch, rank...), stable across runs."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0]) & _MASK


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed & (2**32 - 1))
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Ask torch for deterministic kernels (and no cuDNN autotuning) when ``enabled``."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy / Python / MONAI seeds from the worker's torch seed.

    torch gives each worker ``base_seed + worker_id``, with ``base_seed`` drawn from the loader's
    generator, so a seeded loader gives seeded workers.
    """
    seed = torch.initial_seed() & _MASK
    seed_everything(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        reseed_transforms(info.dataset, seed)


def reseed_transforms(dataset: object, seed: int) -> None:
    """Seed MONAI's randomisable transforms held by ``dataset`` (they keep their own generators)."""
    from monai.transforms import Randomizable

    transform = getattr(dataset, "transform", None)
    if isinstance(transform, Randomizable):
        transform.set_random_state(seed=seed)


def rng_state() -> dict[str, object]:
    """Global generator states, stored as tensors and plain Python values (loadable with weights_only)."""
    np_state = np.random.get_state()
    state: dict[str, object] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: object) -> object:
    """Python's random state is nested tuples; a serializer may hand back lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def check_seed(seed: int) -> int:
    if not 0 <= seed <= _MASK:
        raise ConfigError(f"training.seed must lie in 0..{_MASK}, got {seed}")
    return seed
