"""The value types of an embedding, one rule each, for every caller: the server's byte encodings
(OpenAI `encoding_format`, Cohere `embedding_types`), `embed-file`'s `--embedding-type`, and the
library. The same name gives the same bytes everywhere.

- float32, float16: the vector's values, as they are or rounded to half precision.
- int8, uint8, binary, ubinary: bit for bit sentence-transformers'
  `quantize_embeddings(vectors, precision, ranges=fixed_ranges(d))`:
  - int8 / uint8: the unit vector quantized on one fixed range, [-0.3, 0.3] on every dimension,
    into 256 bins, `floor((x + 0.3) / (0.6 / 255))` clipped to [0, 255], in float32 (the C++
    core does it); int8 is the bin minus 128. A row that is not of unit length (a model that
    does not normalize, or `normalize=false`) is normalized first, since the range is for unit
    vectors; a unit row is quantized as it is.
  - binary / ubinary: the sign bits (x > 0) packed 8 per byte, first dimension in the top bit
    (`numpy.packbits`), as sentence-transformers and Cohere pack them; binary is that byte
    minus 128 (int8).

Every rule is per value or per row (no statistics over a batch), so a text gets the same bytes
whatever batch, request, part or Ray actor it lands in.

Why [-0.3, 0.3], measured with `python -m bench quantize` (bench/RESULTS.md): ranking the
reference texts against each other, recall@10 against float32 is 0.993 (int8 dot product) and
0.995 (L2) for all-MiniLM-L6-v2, 0.993 / 0.996 for all-mpnet-base-v2; per-dimension min/max
ranges calibrated on half the texts and scored on the other half reach only 0.72 / 0.91 and
0.67 / 0.90, since unequal per-dimension scales distort the geometry. No component of any unit
vector in either reference file reaches 0.3 (largest 0.275 and 0.187), so nothing is clipped.
"""

from __future__ import annotations

import numpy as np

from embedserve import _core

BYTE_ENCODINGS = ("int8", "uint8", "binary", "ubinary")
ENCODINGS = ("float32", "float16", *BYTE_ENCODINGS)
UNIT_RANGE = 0.3
# What the byte encodings mean, recorded where bytes are stored (embed-file's manifest), so that
# output written under another rule is not mixed with this one's.
BYTE_RULE = f"sentence-transformers quantize_embeddings, ranges [-{UNIT_RANGE}, {UNIT_RANGE}]"
# Rows whose squared norm is this close to 1 are already unit vectors (float32 rounding leaves
# a normalized row within ~1e-7 of 1) and are quantized as they are, so that the bytes of a
# normalized vector are exactly sentence-transformers' for that same vector.
UNIT_TOLERANCE = 1e-5

_DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "binary": np.dtype(np.int8),
    "ubinary": np.dtype(np.uint8),
}


def check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; known: {', '.join(ENCODINGS)}")


def width(encoding: str, dimension: int) -> int:
    """Values per encoded vector: `dimension`, or one byte per 8 dimensions for the bit packings."""
    check_encoding(encoding)
    return (dimension + 7) // 8 if encoding in ("binary", "ubinary") else dimension


def dtype(encoding: str) -> np.dtype:
    """The NumPy type of an encoded vector's values."""
    check_encoding(encoding)
    return _DTYPES[encoding]


def fixed_ranges(dimension: int) -> np.ndarray:
    """The int8/uint8 ranges, [2, dimension] float32: sentence-transformers' `ranges` argument."""
    return np.stack(
        [np.full(dimension, -UNIT_RANGE, np.float32), np.full(dimension, UNIT_RANGE, np.float32)]
    )


def quantize(vectors: np.ndarray, encoding: str) -> np.ndarray:
    """`vectors` [n, d] float as `encoding`: [n, d] values, or [n, ceil(d / 8)] packed bits."""
    check_encoding(encoding)
    if encoding == "float32":
        return np.ascontiguousarray(vectors, dtype=np.float32)
    if encoding == "float16":
        return np.asarray(vectors, dtype=np.float32).astype(np.float16)
    if encoding in ("binary", "ubinary"):
        return _core.pack_bits(vectors, signed=encoding == "binary")
    ranges = fixed_ranges(vectors.shape[1])
    return _core.quantize(_unit_rows(vectors), ranges[0], ranges[1], signed=encoding == "int8")


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """`vectors` with each row that is not already of unit length normalized (C++ kernel)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    squares = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)
    off = np.abs(squares - 1.0) > UNIT_TOLERANCE
    if not off.any():
        return matrix
    fixed = matrix.copy()
    fixed[off] = _core.cut_and_normalize(matrix[off], None, True)
    return fixed
