"""A completeness check for NRRD files (``.nrrd``, ``.seg.nrrd``) with their voxels attached.

A header that reads does not make a whole file: a copy cut short keeps its header, and a look at the
header alone (what ``predict --skip-existing`` does to find finished outputs) would take it for a
finished one. :func:`missing_data` compares the bytes the header needs (``sizes`` x the size of ``type``)
with what follows the header's blank line, inflating a ``gzip`` payload on the way
(:func:`attnseg.data.metaimage.payload_bytes`). Detached data files and other encodings (ascii, bzip2)
are not checked here: their readers fail on them when the file is read.
"""

from __future__ import annotations

from pathlib import Path

from attnseg.data.metaimage import payload_bytes

# NRRD type names (every spelling the format allows) and their sizes in bytes.
_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t"), 2),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "int64", "int64_t"), 8),
    **dict.fromkeys(("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), 8),
    "float": 4,
    "double": 8,
}
_HEADER_LIMIT = 1 << 20  # a header longer than this is not one


def missing_data(path: Path) -> str | None:
    """Why ``path``'s attached voxel data falls short of its header, or None when it is complete (or not
    checked: detached data, another encoding, a header this check does not understand)."""
    header, offset = _header(path)
    try:
        needed = _TYPE_BYTES[header["type"].lower()]
        for size in header["sizes"].split():
            needed *= int(size)
    except (KeyError, ValueError):
        return None  # ITK refuses such a header with its own message
    if "data file" in header or "datafile" in header or offset is None:
        return None
    encoding = header.get("encoding", "raw").lower()
    if encoding not in ("raw", "gzip", "gz"):
        return None
    found = payload_bytes(path, offset, compressed=encoding != "raw")
    if found < needed:
        return (
            f"NRRD file holds {found:,} bytes of voxel data where its header (sizes {header['sizes']}, "
            f"{header['type']}, {encoding}) needs {needed:,}; is it truncated?"
        )
    return None


def _header(path: Path) -> tuple[dict[str, str], int | None]:
    """The ``field: value`` lines of the header (keys in lower case; ``key:=value`` pairs left out) and the
    offset of the data after its blank line (None when the file ends first)."""
    header: dict[str, str] = {}
    with open(path, "rb") as stream:
        while stream.tell() < _HEADER_LIMIT:
            line = stream.readline(_HEADER_LIMIT)
            if not line:
                return header, None
            text = line.decode("latin-1").rstrip("\r\n")
            if not text:
                return header, stream.tell()
            if text.startswith("#") or ":=" in text:
                continue
            key, _, value = text.partition(":")
            header[key.strip().lower()] = value.strip()
    return header, None
