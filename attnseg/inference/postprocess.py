"""Post-processing decided by evidence: keep only the largest connected component of a class where the
training data say the class is one piece and validation says it helps (nnU-Net decides the same
question on its cross-validation).

A class qualifies when every training label holds it as a single connected component, up to specks (a brain,
a liver; not two lungs in one class, not lesions). If validation cases exist, it is kept only where it did not
lower the validation Dice of the selected model; without validation (``--fold all``) the training
labels' topology is the evidence. The decision is written to the model directory
(``postprocessing.json``) and the predictor applies it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from attnseg.data.arrays import crop, mask_bbox

LARGEST_COMPONENT = "largest_component"


def keep_largest_components(classes: np.ndarray, foreground: Iterable[int]) -> np.ndarray:
    """Keep the largest face-connected component of each foreground class; the rest becomes background (0).

    Each class is labelled within its bounding box, not over the whole grid: its components and their
    numbering (raster order of their first voxels) are the same there, so the result is identical, while
    the int32 labels and their masks cover an organ's box instead of a whole CT (0.3 GiB a class on
    512 x 512 x 300).
    """
    out = classes.copy()
    for value in foreground:
        mask = classes == value
        box = mask_bbox(mask)
        if box is None:
            continue
        inside = crop(mask, box)
        components, count = ndimage.label(inside)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            crop(out, box)[inside & (components != sizes.argmax())] = 0
    return out


# A class is "one piece" when its largest component holds at least this share of its voxels: a few specks left by
# the labelling tool (FSL BET's Colin27 brain: 98 specks, 0.05% of the mask) do not make a brain two organs, while
# two lungs in one class (about half each) or lesions stay several pieces.
ONE_PIECE_SHARE = 0.99


def single_component_classes(labels: Iterable[np.ndarray], num_classes: int) -> list[int]:
    """Foreground class indices that form one connected component in every label map where they occur (up to
    specks: the largest component holds at least ``ONE_PIECE_SHARE`` of the class)."""
    candidates = set(range(1, num_classes))
    for label in labels:
        label = np.asarray(label)
        for k in list(candidates):
            mask = label == k
            if not mask.any():
                continue
            components, count = ndimage.label(mask)
            if count > 1 and np.bincount(components.ravel())[1:].max() < ONE_PIECE_SHARE * mask.sum():
                candidates.discard(k)
    return sorted(candidates)


def decide(candidates: Sequence[str], validation: Mapping[str, float] | None) -> dict[str, str]:
    """Class name -> why the largest component is kept, for the candidates that validation does not refute.

    ``validation`` holds ``val_dice_<name>`` and ``val_dice_<name>_largest_component`` of the selected
    model; None without validation.
    """
    kept = {}
    for name in candidates:
        if validation is None:
            kept[name] = "one connected component in every training label (no validation cases)"
            continue
        plain, largest = validation.get(f"val_dice_{name}"), validation.get(f"val_dice_{name}_{LARGEST_COMPONENT}")
        if plain is not None and largest is not None and largest >= plain:
            kept[name] = f"validation Dice {plain:.4f} -> {largest:.4f} with the largest component only"
    return kept
