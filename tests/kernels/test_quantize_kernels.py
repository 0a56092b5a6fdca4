"""The C++ byte encodings against their definitions: scalar quantization against
sentence-transformers' own quantize_embeddings, packed sign bits against numpy.packbits, on
awkward shapes, layouts and values."""

from __future__ import annotations

import numpy as np
import pytest
from embedserve import _core
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sentence_transformers import quantize_embeddings

finite = st.floats(-2, 2, width=32, allow_nan=False)
matrices = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40), elements=finite
)


@settings(max_examples=60, deadline=None)
@given(matrices, st.booleans(), st.booleans(), st.data())
def test_quantize_matches_sentence_transformers(x, signed, transposed, data):
    if transposed:
        x = np.ascontiguousarray(x.T).T  # a non-C-contiguous view of the same values
    d = x.shape[1]
    lo = np.asarray(data.draw(st.lists(finite, min_size=d, max_size=d)), np.float32)
    width = np.asarray(
        data.draw(st.lists(st.floats(0, 3, width=32), min_size=d, max_size=d)), np.float32
    )
    hi = (lo + width).astype(np.float32)  # width 0 (a zero step) included
    got = _core.quantize(x, lo, hi, signed=signed)
    # A subnormal step overflows the quotient to inf (bin 255), in NumPy as in the kernel.
    with np.errstate(over="ignore"):
        want = quantize_embeddings(x, "int8" if signed else "uint8", ranges=np.stack([lo, hi]))
    assert got.dtype == want.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None)
@given(matrices, st.booleans())
def test_pack_bits_matches_numpy_and_sentence_transformers(x, signed):
    got = _core.pack_bits(x, signed=signed)
    want = np.packbits(x > 0, axis=1)
    if signed:
        want = (want.astype(np.int16) - 128).astype(np.int8)
    assert got.dtype == want.dtype and got.shape == (x.shape[0], (x.shape[1] + 7) // 8)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, quantize_embeddings(x, "binary" if signed else "ubinary"))


def test_quantize_edges_infinities_nan_and_flat_ranges():
    x = np.asarray([[-1.0, -0.3, 0.0, 0.3, 1.0, np.inf, -np.inf]], np.float32)
    lo, hi = np.full(7, -0.3, np.float32), np.full(7, 0.3, np.float32)
    assert _core.quantize(x, lo, hi, signed=False).tolist() == [[0, 0, 127, 255, 255, 255, 0]]
    assert _core.quantize(x, lo, hi, signed=True).tolist() == [
        [-128, -128, -1, 127, 127, 127, -128]
    ]
    # A zero step is 1, as sentence-transformers has it: floor(x - lo), clipped.
    flat = np.zeros(7, np.float32)
    assert _core.quantize(x, flat, flat, signed=False).tolist() == [[0, 0, 0, 0, 1, 255, 0]]
    # NaN is bin 0 (sentence-transformers' cast of NaN to an integer is undefined).
    nan = np.asarray([[np.nan]], np.float32)
    assert _core.quantize(nan, lo[:1], hi[:1], signed=False).tolist() == [[0]]


def test_quantize_and_pack_bits_reject_bad_shapes():
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"lo must be a 1-D float array of shape \(4,\).*\(3,\)"):
        _core.quantize(x, np.zeros(3, np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="2-D"):
        _core.pack_bits(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="float32"):
        _core.pack_bits(np.zeros((2, 4), np.int64))


def test_dimensions_refuses_bool_in_the_kernel():
    with pytest.raises(TypeError, match="bool"):
        _core.cut_and_normalize(np.ones((1, 4), np.float32), True)
    assert _core.cut_and_normalize(np.ones((1, 4), np.float32), 1).shape == (1, 1)


def test_package_root_exports_the_engine():
    import embedserve
    from embedserve import Engine, InputError

    assert Engine.__module__ == "embedserve.engine" and issubclass(InputError, ValueError)
    assert "Engine" in dir(embedserve)
