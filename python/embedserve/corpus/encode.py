"""The Arrow column type of stored vectors. The values themselves come from
`embedserve.quantization`, the one rule per type that the server and the library use too."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from embedserve.quantization import ENCODINGS, dtype, width

EMBEDDING_TYPES = ENCODINGS


def arrow_type(embedding_type: str, dimension: int) -> pa.DataType:
    """A fixed-size list of the type's values: int8/uint8 for the byte encodings (binary and
    ubinary hold one byte per 8 dimensions)."""
    return pa.list_(pa.from_numpy_dtype(dtype(embedding_type)), width(embedding_type, dimension))


def to_arrow(values: np.ndarray, embedding_type: str, dimension: int) -> pa.FixedSizeListArray:
    """A fixed-size-list column from the [n, width] array `quantize` made (no copy of the values)."""
    value_type = pa.from_numpy_dtype(dtype(embedding_type))
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=value_type)
    return pa.FixedSizeListArray.from_arrays(flat, width(embedding_type, dimension))
