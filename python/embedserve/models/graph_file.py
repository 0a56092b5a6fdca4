"""Whether an ONNX file is whole, checked without reading its weights.

A cached graph cut short (a full disk, another tool) would otherwise fail every load with a
protobuf parse error. Parsing the whole file to find out costs as much as loading it (0.7 s and
its size in memory for a 435 MB graph), so this walks only the top-level fields of its
ModelProto: each field's tag and length, seeking over the contents. A file cut anywhere inside
a field ends before that field does; one cut between fields lacks the opset imports, which
`onnx.save` writes after the graph (fields go in field-number order). What it cannot see: a cut
that falls exactly between two of the small fields after the first opset import (further
opsets, metadata; a few of the file's last hundred bytes), or bytes overwritten in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

# ModelProto fields every saved model has: ir_version (1), graph (7), opset_import (8).
REQUIRED_FIELDS = frozenset({1, 7, 8})
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


def onnx_file_is_whole(path: Path) -> bool:
    """Whether the ModelProto in `path` has its required fields and ends where the file does."""
    size = path.stat().st_size
    seen: set[int] = set()
    with path.open("rb") as f:
        while f.tell() < size:
            tag = _varint(f)
            if tag is None:
                return False
            field, wire = tag >> 3, tag & 7
            if wire == VARINT:
                skip = 0 if _varint(f) is not None else size + 1
            elif wire == LENGTH:
                length = _varint(f)
                skip = length if length is not None else size + 1
            elif wire in (FIXED64, FIXED32):
                skip = 8 if wire == FIXED64 else 4
            else:  # groups (3, 4) are not in ONNX's schema; 6 and 7 are not wire types
                return False
            if f.tell() + skip > size:
                return False
            f.seek(skip, 1)
            seen.add(field)
    return REQUIRED_FIELDS <= seen


def _varint(f: BinaryIO) -> int | None:
    """The base-128 varint at the file's position, or None where the file ends inside one."""
    value = shift = 0
    while shift < 70:
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    return None
