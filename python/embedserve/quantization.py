"""int8 / uint8 / binary / ubinary encodings of embeddings, for vector databases that store bytes.

int8 and uint8 quantize the unit-length vector with one fixed range, [-0.3, 0.3] on every
dimension, 256 bins (sentence-transformers' `quantize_embeddings` rule with fixed `ranges`).
Measured with `python -m bench quantize` (bench/RESULTS.md): ranking the reference texts against
each other, recall@10 against float32 is 0.993 (int8 dot product) and 0.995 (L2) for
all-MiniLM-L6-v2, 0.993 / 0.996 for all-mpnet-base-v2; per-dimension min/max ranges calibrated on
half the texts and scored on the other half reach only 0.72 / 0.91 and 0.67 / 0.90, since unequal
per-dimension scales distort the geometry. No component of any unit vector in either reference
file reaches 0.3 (largest 0.275 and 0.187), so nothing is clipped there.

binary and ubinary are the sign bits (x > 0) packed 8 per byte, first dimension in the top bit, as
sentence-transformers and Cohere pack them; `binary` is that byte minus 128 (int8).
"""

from __future__ import annotations

import numpy as np

from embedserve import _core

BYTE_ENCODINGS = ("int8", "uint8", "binary", "ubinary")
UNIT_RANGE = 0.3


def quantize(vectors: np.ndarray, encoding: str) -> np.ndarray:
    """`vectors` [n, d] float32 as int8/uint8 [n, d] or packed bits [n, ceil(d / 8)]."""
    if encoding in ("binary", "ubinary"):
        return _core.pack_bits(vectors, signed=encoding == "binary")
    if encoding not in ("int8", "uint8"):
        raise ValueError(f"unknown byte encoding {encoding!r}; known: {', '.join(BYTE_ENCODINGS)}")
    # The fixed range is for unit vectors: quantize the direction even if normalize=false.
    unit = _core.cut_and_normalize(vectors, None, True)
    d = unit.shape[1]
    lo = np.full(d, -UNIT_RANGE, dtype=np.float32)
    hi = np.full(d, UNIT_RANGE, dtype=np.float32)
    return _core.quantize(unit, lo, hi, signed=encoding == "int8")
