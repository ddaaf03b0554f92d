"""Palette PNG masks: the label of a pixel is its palette index, not the colour the palette gives it.

Annotation tools (and PASCAL VOC) save masks as palette PNGs (colour type 3): each pixel stores an index,
0 for background, 1, 2, ... for the classes, and the PLTE chunk gives each index a colour for display.
ITK expands such a file into the RGB colours of its palette, so read as an image it is a 3-channel colour
picture and the class values are gone (two indices that share a colour, as padded palettes' black
entries do, could not even be told apart). Pillow reads the stored indices themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnseg.errors import DataError


def palette_indices(path: Path) -> np.ndarray | None:
    """The ``(X, Y)`` palette indices of a palette PNG (x along a row, as attnseg's arrays of a 2-D picture),
    or None for any other file, other PNG colour types included."""
    from PIL import Image as Picture
    from PIL import UnidentifiedImageError

    try:
        with Picture.open(path) as picture:
            if picture.format != "PNG" or picture.mode != "P":
                return None
            indices = np.asarray(picture)  # (rows, columns) = (Y, X)
    except (OSError, UnidentifiedImageError, ValueError) as error:  # a PNG ITK read but Pillow cannot
        raise DataError(f"{path}: cannot read the palette PNG's indices ({error})") from error
    return np.ascontiguousarray(indices.T)
