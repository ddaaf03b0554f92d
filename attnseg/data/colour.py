"""One colour picture as all the channels of a case: nnU-Net's natural-image layout.

Dermoscopy, endoscopy, fundus and histology datasets come as one RGB PNG or TIFF per case. nnU-Net's
natural-image reader takes such a file, ``CASE_0000.png``, as channels 0-2 when dataset.json declares three
channels; attnseg does the same. The rule, from names alone: a case of a picture dataset (PNG, TIFF) that
has only ``_0000`` (or, at predict, one file without a channel suffix) where several channels are declared
is one colour file. Its pixels then decide (:func:`colour_channels`):

- N channels where N are declared: channels 0..N-1, in the file's order (R, G, B).
- RGBA where three are declared: an alpha that is opaque everywhere (what most tools save) carries nothing
  and is dropped; any transparent pixel is refused, since the colours under it are not what the user saw
  and dropping the alpha would train on them silently.
- A grey picture: refused, as nnU-Net refuses it. Copying grey into R, G and B would feed a colour model
  pictures unlike those it is trained on, a guess the user should make on purpose.
"""

from __future__ import annotations

import numpy as np

from attnseg.data.image import Image
from attnseg.errors import DataError

# The channels of an RGBA picture; alpha is the last.
RGBA = 4


def colour_channels(image: Image, channels: int) -> Image:
    """``image`` (one colour picture read whole) as the ``channels`` channels of its case, or raise.

    Raises:
        DataError: the picture is grey, has transparent pixels, or holds another number of channels;
            the message names the file and says how to save it.
    """
    if image.channels == channels:
        return image
    files = f"files CASE_0000 to CASE_{channels - 1:04d}"
    if image.channels == RGBA and channels == RGBA - 1:
        return _without_alpha(image)
    if image.channels == 1:
        raise DataError(
            f"{image.name}: a grey picture where the case needs {channels} channels (one colour file, or {files}); "
            "save it in colour if it is a colour picture saved grey (Pillow: .convert('RGB')), or save each "
            "channel as its own file"
        )
    raise DataError(
        f"{image.name}: a picture of {image.channels} channels where the case needs {channels} "
        f"(one colour file of {channels} channels, or {files})"
    )


def _without_alpha(image: Image) -> Image:
    """The colour channels of an RGBA picture whose alpha is opaque everywhere; refuse transparent pixels."""
    alpha = image.array[-1]
    opaque = np.iinfo(alpha.dtype).max if alpha.dtype.kind in "iu" else 1.0
    transparent = int(np.count_nonzero(alpha != opaque))
    if transparent:
        raise DataError(
            f"{image.name}: an RGBA picture with {transparent} transparent pixel(s) where the case needs 3 channels "
            "(R, G, B); the colours under transparency are not the picture: flatten it onto a background and "
            "save it as RGB"
        )
    meta = {**image.meta, "alpha_dropped": True}
    return Image(np.ascontiguousarray(image.array[:-1]), image.geometry, image.path, meta)
