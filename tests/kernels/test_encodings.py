"""embedserve.quantization, the one rule per value type that the server, embed-file and the
library share: byte encodings equal to sentence-transformers' quantize_embeddings on
all-MiniLM-L6-v2's vectors. (The same check over HTTP is in tests/server/test_byte_encodings.py,
over embed-file in tests/corpus/test_formats.py.)"""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
from embedserve import _core
from embedserve.quantization import (
    BYTE_ENCODINGS,
    ENCODINGS,
    dtype,
    fixed_ranges,
    quantize,
    width,
)


@pytest.mark.parametrize("kind", BYTE_ENCODINGS)
def test_byte_encodings_are_sentence_transformers_own(reference, st_quantize, kind):
    vectors = reference["normalized"]
    got = quantize(vectors, kind)
    want = st_quantize(vectors, kind)
    assert got.dtype == want.dtype == dtype(kind)
    assert got.shape == want.shape == (len(vectors), width(kind, vectors.shape[1]))
    np.testing.assert_array_equal(got, want)


def test_the_fixed_range_bins_a_value_as_sentence_transformers_does(st_quantize):
    # A value on a bin edge in float32 arithmetic: in double it falls in the bin below.
    row = np.zeros((1, 2), np.float32)
    row[0, 0] = np.float32(0.010588226)
    row[0, 1] = np.sqrt(np.float32(1) - row[0, 0] ** 2)
    assert quantize(row, "int8")[0, 0] == st_quantize(row, "int8")[0, 0] == 4
    ranges = fixed_ranges(3)
    assert ranges.dtype == np.float32
    np.testing.assert_array_equal(ranges, np.float32([[-0.3] * 3, [0.3] * 3]))


@pytest.mark.parametrize("kind", BYTE_ENCODINGS)
def test_scalar_encodings_quantize_the_direction_of_a_vector_that_is_not_unit(
    reference, st_quantize, kind
):
    # Rows of lengths 0.2 to 5, as a model without a Normalize module (or normalize=false) gives.
    vectors = reference["normalized"]
    raw = vectors * np.linspace(0.2, 5, len(vectors), dtype=np.float32)[:, None]
    assert np.abs(np.linalg.norm(raw, axis=1) - 1).min() > 1e-3
    # Sign bits need no normalizing; the fixed range is for unit vectors, so int8/uint8 get one.
    unit = _core.cut_and_normalize(raw, None, True) if "int8" in kind else raw
    np.testing.assert_array_equal(quantize(raw, kind), st_quantize(unit, kind))
    mixed = np.concatenate([raw[:3], vectors[3:6]])
    np.testing.assert_array_equal(
        quantize(mixed, kind),
        st_quantize(np.concatenate([unit[:3], vectors[3:6]]), kind),
    )


def test_float_types_and_the_shape_of_each_type(reference):
    vectors = reference["normalized"][:5]
    assert quantize(vectors, "float32").dtype == np.float32
    np.testing.assert_array_equal(quantize(vectors, "float32"), vectors)
    np.testing.assert_array_equal(quantize(vectors, "float16"), vectors.astype(np.float16))
    assert [width(kind, 10) for kind in ENCODINGS] == [10, 10, 10, 10, 2, 2]
    assert [dtype(kind).name for kind in ENCODINGS] == [
        "float32",
        "float16",
        "int8",
        "uint8",
        "int8",
        "uint8",
    ]
    with pytest.raises(ValueError, match="unknown encoding 'int4'; known: float32, float16, int8"):
        quantize(vectors, "int4")


def test_every_caller_offers_the_same_byte_encodings():
    from embedserve.corpus import EMBEDDING_TYPES
    from embedserve.server.adapters.cohere import EmbeddingType
    from embedserve.server.openapi import EncodingFormat
    from embedserve.server.schemas import ENCODING_FORMATS

    assert EMBEDDING_TYPES == ENCODINGS
    assert ENCODING_FORMATS == ("float", "base64", *BYTE_ENCODINGS)
    # The wire types msgspec and the OpenAPI document are built from (Literal, spelled out).
    assert get_args(EncodingFormat) == ENCODING_FORMATS
    assert set(get_args(EmbeddingType)) == set(ENCODING_FORMATS)
