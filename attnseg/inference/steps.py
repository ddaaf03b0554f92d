"""Predicting one image in three steps, and what a run over many cases needs of a predictor.

:class:`~attnseg.inference.predictor.Predictor` takes the steps (prepare, forward, finish, then write the
mask); :func:`~attnseg.inference.batch.predict_cases` spreads them over loader threads, the thread that
owns the GPU and a writer thread, on every rank. The batch runner sees a predictor only through
:class:`StepwisePredictor`, so ``Predictor.predict_files`` can call it without the two modules importing
each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from attnseg.data import Image, PreprocessedCase
from attnseg.inference.qc import Agreement


@dataclass
class PreparedImage:
    """An image preprocessed for every model of an ensemble: what a background loader hands over.

    ``groups`` pairs each distinct preprocessing (models with the same plan, such as the folds of one
    training, share one) with the indices of the models that use it. ``agreement`` is filled in by the
    forward step when quality control measures how much mirrored copies or ensemble members agree.
    """

    image: Image
    groups: list[tuple[PreprocessedCase, list[int]]] = field(default_factory=list)
    agreement: Agreement | None = None


class StepwisePredictor(Protocol):
    """The steps :func:`~attnseg.inference.batch.predict_cases` runs for each case (see ``Predictor``)."""

    # Where the networks run: on a GPU two loader threads by default, and its cache is emptied after a failure.
    device: torch.device
    # Channels a case must have: how many files make one case (nnU-Net's _0000, _0001...).
    num_channels: int

    def prepare(self, image: Image) -> PreparedImage:
        """Checks and preprocessing (a loader thread)."""

    def forward(self, prepared: PreparedImage) -> list[torch.Tensor]:
        """The networks (the thread that owns the device)."""

    def finish(
        self, prepared: PreparedImage, means: Sequence[torch.Tensor], probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(mask, probabilities) on the image's grid (the writer thread); the probabilities may be None
        when ``probabilities`` is False (the run writes none), so a predictor need not hold them."""

    def write_mask(self, path: Path, mask: np.ndarray, image: Image, overwrite: bool, dicom: bool) -> None:
        """Write the mask with the image's geometry, or as a DICOM series in the image's study."""
