"""How vectors are stored: float32, float16, int8 or packed binary, and their Arrow column type.

`quantize` is the one place that turns float vectors into the smaller types; it is NumPy for
now and can be swapped for the C++ core's encoders without touching its callers. Every rule is
per value (no statistics over a batch), so a row gets the same bytes whatever batch, part or
Ray actor it lands in.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

EMBEDDING_TYPES = ("float32", "float16", "int8", "binary")

_ARROW = {"float32": pa.float32(), "float16": pa.float16(), "int8": pa.int8(), "binary": pa.uint8()}


def width(embedding_type: str, dimension: int) -> int:
    """Values per stored vector: `dimension`, or one byte per 8 dimensions for binary."""
    return (dimension + 7) // 8 if embedding_type == "binary" else dimension


def arrow_type(embedding_type: str, dimension: int) -> pa.DataType:
    return pa.list_(_ARROW[embedding_type], width(embedding_type, dimension))


def quantize(vectors: np.ndarray, embedding_type: str) -> np.ndarray:
    """[n, d] float32 → the stored values, [n, width].

    int8: round(x × 127), clipped to ±127 — for unit-length vectors, whose values lie in [-1, 1].
    binary: one bit per dimension (1 where x > 0), packed 8 to a byte, first dimension in the
    high bit (NumPy's packbits, the layout of sentence-transformers' "ubinary").
    """
    if embedding_type == "float32":
        return np.ascontiguousarray(vectors, dtype=np.float32)
    if embedding_type == "float16":
        return vectors.astype(np.float16)
    if embedding_type == "int8":
        return np.clip(np.rint(vectors * 127.0), -127, 127).astype(np.int8)
    if embedding_type == "binary":
        return np.packbits(vectors > 0, axis=1)
    raise ValueError(
        f"embedding type must be one of {', '.join(EMBEDDING_TYPES)}, got {embedding_type!r}"
    )


def to_arrow(values: np.ndarray, embedding_type: str, dimension: int) -> pa.FixedSizeListArray:
    """A fixed-size-list column from the [n, width] array `quantize` made (no copy of the values)."""
    size = width(embedding_type, dimension)
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=_ARROW[embedding_type])
    return pa.FixedSizeListArray.from_arrays(flat, size)
