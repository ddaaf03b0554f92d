"""Palette PNG masks: the label of a pixel is its palette index, not the colour the palette gives it.

Annotation tools (and PASCAL VOC) save masks as palette PNGs (colour type 3): each pixel stores an index,
0 for background, 1, 2, ... for the classes, and the PLTE chunk gives each index a colour for display.
ITK expands such a file into the RGB colours of its palette, so read as an image it is a 3-channel colour
picture and the class values are gone. This module reads the palette from the file's own chunks (no image
library needed) and turns the colours ITK gives back into the indices the user drew.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from attnseg.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PALETTE_COLOUR_TYPE = 3  # IHDR colour type of an indexed-colour PNG


def png_palette(path: Path) -> np.ndarray | None:
    """The ``(N, 3)`` uint8 palette of a palette PNG, or None for any other file (other PNG colour types too).

    Reads the chunks before the pixel data only: the IHDR (colour type) and the PLTE (the colours).
    """
    with open(path, "rb") as stream:
        if stream.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            return None
        while len(head := stream.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IHDR":
                header = stream.read(length)
                if len(header) < 10 or header[9] != PALETTE_COLOUR_TYPE:  # width, height, bit depth, colour type
                    return None
                stream.seek(4, 1)  # CRC
            elif kind == b"PLTE":
                colours = stream.read(length)
                return np.frombuffer(colours[: len(colours) // 3 * 3], np.uint8).reshape(-1, 3)
            elif kind in (b"IDAT", b"IEND"):  # the palette comes before the pixels or not at all
                return None
            else:
                stream.seek(length + 4, 1)
    return None


def palette_indices(colours: np.ndarray, palette: np.ndarray, path: Path) -> np.ndarray:
    """The palette index of each pixel, ``(1, X, Y)`` uint8, from the ``(C, X, Y)`` colours ITK expanded it to
    (C is 3, or 4 when a tRNS chunk adds alpha, which is ignored).

    Where several palette entries share a colour, the lowest index is taken: tools pad a palette with
    unused black entries after the ones they draw with, and background (0) is black.

    Raises:
        DataError: a pixel's colour is not in the palette (the file was not expanded from it).
    """
    codes = _colour_codes(colours[:3].astype(np.int64))
    palette_codes = _colour_codes(palette.T.astype(np.int64))
    lookup: dict[int, int] = {}
    for index, code in enumerate(palette_codes.tolist()):
        lookup.setdefault(code, index)
    found, inverse = np.unique(codes, return_inverse=True)
    missing = [int(c) for c in found if int(c) not in lookup]
    if missing:
        raise DataError(f"{path}: pixel colours {missing[:5]} are not in the file's palette; is the PNG damaged?")
    indices = np.array([lookup[int(c)] for c in found], dtype=np.uint8)[inverse.reshape(codes.shape)]
    return indices[None]


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    """One integer per colour: ``(3, ...)`` 8-bit RGB -> ``(...)`` ``R * 65536 + G * 256 + B``."""
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
