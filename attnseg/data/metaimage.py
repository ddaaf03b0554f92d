"""A completeness check for MetaImage files (``.mha``, ``.mhd`` + raw), which ITK does not make.

ITK's MetaIO reader accepts a file whose voxel data is shorter than its header says: it prints "data not
read completely" on the process's stderr and returns an image padded with whatever the buffer held. A
truncated copy or a header edited by hand then becomes silent garbage. :func:`missing_data` compares the
bytes the header needs (``DimSize`` x ``ElementNumberOfChannels`` x the size of ``ElementType``) with what
the data holds, decompressing a compressed payload on the way (zlib is fast next to reading the file).
"""

from __future__ import annotations

import zlib
from pathlib import Path

# MetaIO element types and their sizes in bytes.
ELEMENT_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip
_CHUNK = 1 << 22


def _header(path: Path) -> tuple[dict[str, str], int]:
    """The ``key = value`` lines up to and including ``ElementDataFile``, and the offset after them."""
    header: dict[str, str] = {}
    with open(path, "rb") as stream:
        while True:
            line = stream.readline(4096)
            if not line:
                return header, stream.tell()
            key, _, value = line.decode("latin-1").partition("=")
            header[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                return header, stream.tell()


def payload_bytes(source: Path, offset: int, compressed: bool) -> int:
    """How many bytes of voxel data ``source`` holds from ``offset`` on (after decompression)."""
    with open(source, "rb") as stream:
        stream.seek(offset)
        if not compressed:
            return max(source.stat().st_size - offset, 0)
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip framing
        total = 0
        while chunk := stream.read(_CHUNK):
            total += len(inflater.decompress(chunk))
        return total + len(inflater.flush())


def missing_data(path: Path) -> str | None:
    """Why ``path``'s voxel data falls short of its header, or None when it is complete (or when the
    layout is one we do not check: a list of slice files)."""
    header, offset = _header(path)
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        element = ELEMENT_BYTES[header["ElementType"]]
        channels = int(header.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        return None  # ITK itself refuses such a header, with its own message
    data_file = header.get("ElementDataFile", "")
    if data_file in ("", "LIST") or "%" in data_file or " " in data_file:
        return None
    source = path if data_file == "LOCAL" else path.parent / data_file
    if not source.is_file():
        return f"MetaImage voxel data file {source} is missing"
    compressed = header.get("CompressedData", "False").lower() == "true"
    needed = channels * element
    for size in dims:
        needed *= size
    try:
        found = payload_bytes(source, offset if data_file == "LOCAL" else 0, compressed)
    except zlib.error as error:
        return f"MetaImage compressed voxel data is corrupt ({error})"
    if found < needed:
        return (
            f"MetaImage file holds {found:,} bytes of voxel data where its header (DimSize "
            f"{' '.join(map(str, dims))}, {header['ElementType']}) needs {needed:,}; is it truncated?"
        )
    return None
