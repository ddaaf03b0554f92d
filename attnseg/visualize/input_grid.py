"""Maps computed on a model's grid, put back on the scan's own grid by the predictor's own inverse.

A model sees a scan cropped, resampled (and, as the plan says, otherwise transformed); its masks are put
back with :func:`attnseg.data.preprocess.restore_probabilities` / ``restore_prediction``. Attention maps
take exactly the same way back, so they line up with the scan and with its mask voxel for voxel, and
stay right whatever the plan learns to do: nothing here knows any geometry.

``restore_probabilities`` takes K class channels and fills the area outside the crop with probability 1
for the background and 0 for every other class; so maps travel in the K - 1 foreground channels and come
back as 0 outside the crop (where the network never looked).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from attnseg.data.preprocess import CaseProperties, restore_prediction, restore_probabilities


def maps_on_input_grid(maps: np.ndarray, properties: CaseProperties) -> Iterator[np.ndarray]:
    """Each of ``maps`` (M, *S) on the network's grid as a float32 (*original) array, one at a time."""
    maps = np.asarray(maps, dtype=np.float32)
    classes = len(properties.class_values)
    per_call = classes - 1
    if per_call < 1:
        raise ValueError("a model with a single class has no foreground channel to carry maps")
    for start in range(0, maps.shape[0], per_call):
        chunk = maps[start : start + per_call]
        packed = np.zeros((classes, *maps.shape[1:]), dtype=np.float32)
        packed[1 : 1 + len(chunk)] = chunk
        restored = restore_probabilities(packed, properties)
        yield from restored[1 : 1 + len(chunk)]


def labels_on_input_grid(probabilities: np.ndarray, properties: CaseProperties) -> np.ndarray:
    """Class probabilities (K, *S) on the network's grid -> a (*original) map of label values, as
    ``attnseg predict`` makes its masks."""
    return restore_prediction(np.asarray(probabilities, dtype=np.float32), properties)[0]
