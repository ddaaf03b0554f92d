"""Whether an image file says how large its pixels are in the world, or only that they are pixels.

Scans (NIfTI, NRRD, MetaImage, DICOM) store their voxel size in mm; distances measured on them are mm.
2-D pictures mostly do not, and a reader that fills in 1 x 1 makes every distance a number of pixels that
reads as mm. attnseg's rule, by format:

* **PNG**: the pixel size is stored when the file holds an ``sCAL`` chunk (the physical scale of the
  subject), which ITK, hence attnseg, writes from an image's spacing. Pictures saved by cameras, editors,
  annotation tools or Pillow hold none (a ``pHYs`` chunk is a display density, and ITK ignores it): unknown.
* **TIFF**: never stored, as far as attnseg reads. The resolution tags say how large to *print* the picture
  (72, 96 or 300 dpi, whatever the editor chose), not how large the object's pixels are; ITK turns them
  into mm (300 dpi -> 0.0847 mm), which would be silent garbage. A microscope's calibration lives in
  ImageJ's description or OME-XML, which attnseg does not read: state it (``attnseg evaluate
  --pixel-size``).

A file whose pixel size is unknown is read with a spacing of 1 x 1: its distances are in pixels, and the
commands that print distances say ``px``.
"""

from __future__ import annotations

from pathlib import Path

MM = "mm"
PIXELS = "px"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def stores_pixel_size(path: Path, kind: str) -> bool:
    """Whether ``path``, an image file of format ``kind`` (``'PNG'``, ``'NIfTI'``...), or a DICOM folder,
    states its pixel size in the world (see the module docstring)."""
    if kind == "TIFF":
        return False
    if kind == "PNG":
        return _has_scal_chunk(path)
    return True


def spacing_unit(stored: bool) -> str:
    """The unit of the spacing read, hence of every distance measured: ``'mm'``, or ``'px'`` when the file
    stores no pixel size."""
    return MM if stored else PIXELS


def _has_scal_chunk(path: Path) -> bool:
    """An ``sCAL`` chunk before the image data (where the PNG specification puts it); only chunk headers are
    read, the image data is skipped."""
    with open(path, "rb") as stream:
        if stream.read(8) != _PNG_SIGNATURE:
            return False
        while header := stream.read(8):
            if len(header) < 8:
                return False
            length, name = int.from_bytes(header[:4], "big"), header[4:]
            if name == b"sCAL":
                return True
            if name in (b"IDAT", b"IEND"):
                return False
            stream.seek(length + 4, 1)  # the chunk's data and CRC
    return False
