"""embedserve._core kernels against NumPy / stdlib references on awkward shapes and random data."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from embedserve import _core
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

SETTINGS = settings(max_examples=60, deadline=None)
MODES = ("mean", "cls", "last", "max", "mean_sqrt_len", "weightedmean")
SUMMING = ("mean", "mean_sqrt_len", "weightedmean")

dims = st.one_of(st.sampled_from([1, 3, 7, 385]), st.integers(1, 24))
f32_elements = st.floats(-1e3, 1e3, width=32)
f16_elements = st.floats(width=16, allow_nan=False, allow_infinity=False)
layouts = st.sampled_from(["c", "transposed", "strided"])


def relayout(a: np.ndarray, layout: str) -> np.ndarray:
    """Same values as `a`, in a non-C-contiguous memory layout (unless layout == "c")."""
    if layout == "transposed":
        axes = tuple(reversed(range(a.ndim)))
        return np.ascontiguousarray(a.transpose(axes)).transpose(axes)
    if layout == "strided":
        big = np.zeros(tuple(2 * n + 1 for n in a.shape), dtype=a.dtype)
        view = big[tuple(slice(1, 1 + 2 * n, 2) for n in a.shape)]
        view[...] = a
        return view
    return a


# -- pooling -----------------------------------------------------------------------------------


def ref_pool(
    hidden: np.ndarray, mask: np.ndarray, mode: str, skip: np.ndarray | None = None
) -> np.ndarray:
    """Float64 reference from the exact input values; present == mask != 0.

    The pooled tokens are the present ones after the first skip[b] of them; weights of
    weightedmean count from the first present token.
    """
    h = hidden.astype(np.float64)
    present = np.asarray(mask) != 0
    batch, seq, dim = h.shape
    out = np.zeros((batch, dim))
    for b in range(batch):
        where = np.nonzero(present[b])[0]
        first = where[0] if len(where) else 0
        pooled = where[int(max(skip[b], 0)) if skip is not None else 0 :]
        if mode == "cls" and seq > 0:
            out[b] = h[b, pooled[0] if len(pooled) else 0]
        elif not len(pooled):
            continue
        elif mode == "last":
            out[b] = h[b, pooled[-1]]
        elif mode == "max":
            out[b] = h[b, pooled].max(0)
        elif mode == "mean":
            out[b] = h[b, pooled].sum(0) / len(pooled)
        elif mode == "mean_sqrt_len":
            out[b] = h[b, pooled].sum(0) / np.sqrt(len(pooled))
        elif mode == "weightedmean":
            weights = (pooled + 1 - first).astype(np.float64)
            out[b] = (h[b, pooled] * weights[:, None]).sum(0) / weights.sum()
    return out.astype(np.float32)


def st_mean_f32(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' mean pooling, computed in float32 as torch does."""
    m = (np.asarray(mask) != 0).astype(np.float32)[:, :, None]
    h = hidden.astype(np.float32)
    return (h * m).sum(1) / np.maximum(m.sum(1), np.float32(1e-9))


@st.composite
def pool_inputs(draw: st.DrawFn, dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    batch = draw(st.integers(0, 4))
    seq = draw(st.integers(0 if batch else 1, 9))
    dim = draw(dims)
    elements = f16_elements if dtype is np.float16 else f32_elements
    hidden = draw(hnp.arrays(dtype, (batch, seq, dim), elements=elements))
    mask = draw(hnp.arrays(np.int64, (batch, seq), elements=st.sampled_from([0, 1, 1, 1])))
    if batch and draw(st.booleans()):
        mask[draw(st.integers(0, batch - 1))] = 0  # an all-masked row
    skip = None
    if draw(st.booleans()):  # prompt tokens left out, some rows with more than they hold
        skip = draw(hnp.arrays(np.int64, (batch,), elements=st.integers(-1, seq + 1)))
    return hidden, mask, skip


@SETTINGS
@given(data=pool_inputs(np.float32), mode=st.sampled_from(MODES), layout=layouts)
def test_pool_f32_matches_numpy(data: tuple, mode: str, layout: str):
    hidden, mask, skip = data
    got = _core.pool(relayout(hidden, layout), relayout(mask, layout), mode, skip)
    assert got.dtype == np.float32 and got.shape == (hidden.shape[0], hidden.shape[2])
    want = ref_pool(hidden, mask, mode, skip)
    if mode in SUMMING:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)
    else:
        np.testing.assert_array_equal(got, want)
    if mode == "mean" and skip is None:
        scale = max(float(np.abs(hidden).max(initial=0.0)), 1.0)
        np.testing.assert_allclose(got, st_mean_f32(hidden, mask), rtol=1e-5, atol=1e-6 * scale)


@SETTINGS
@given(data=pool_inputs(np.float16), mode=st.sampled_from(MODES), layout=layouts)
def test_pool_f16_matches_numpy(data: tuple, mode: str, layout: str):
    hidden, mask, skip = data
    got = _core.pool(relayout(hidden, layout), relayout(mask, layout), mode, skip)
    assert got.dtype == np.float32 and got.shape == (hidden.shape[0], hidden.shape[2])
    if mode in SUMMING:
        np.testing.assert_allclose(got, ref_pool(hidden, mask, mode, skip), rtol=1e-6, atol=1e-30)
    else:
        # cls/last/max pick fp16 values: the fp16 -> fp32 conversion must be exact.
        np.testing.assert_array_equal(got, ref_pool(hidden, mask, mode, skip))


def test_half_conversion_is_exact_for_all_65536_patterns():
    bits = np.arange(1 << 16, dtype=np.uint16)
    hidden = bits.view(np.float16).reshape(1, 1, -1)
    got = _core.pool(hidden, np.ones((1, 1), np.int64), "cls")[0]
    want = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(np.signbit(got), np.signbit(want))
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


@pytest.mark.parametrize("mode", MODES)
def test_pool_all_masked_rows(mode: str):
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 4, 5)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]])
    got = _core.pool(hidden, mask, mode)
    want_row1 = hidden[1, 0] if mode == "cls" else np.zeros(5, np.float32)
    np.testing.assert_array_equal(got[1], want_row1)
    np.testing.assert_allclose(got, ref_pool(hidden, mask, mode), rtol=1e-6)
    if mode == "last":
        np.testing.assert_array_equal(got[2], hidden[2, 2])
    # Skipping every present token leaves nothing pooled: the same defined result.
    skipped = _core.pool(hidden, mask, mode, np.array([2, 0, 5]))
    np.testing.assert_array_equal(skipped[0], hidden[0, 0] if mode == "cls" else np.zeros(5))


def test_pool_left_padding_matches_right_padding():
    """Same tokens, padded on either side: every mode gives the same vector."""
    rng = np.random.default_rng(4)
    tokens = rng.standard_normal((3, 5)).astype(np.float32)
    right = np.zeros((1, 6, 5), np.float32)
    left = np.zeros((1, 6, 5), np.float32)
    right[0, :3], left[0, 3:] = tokens, tokens
    right_mask, left_mask = np.array([[1, 1, 1, 0, 0, 0]]), np.array([[0, 0, 0, 1, 1, 1]])
    for mode in MODES:
        for skip in (None, np.array([1])):
            np.testing.assert_allclose(
                _core.pool(left, left_mask, mode, skip),
                _core.pool(right, right_mask, mode, skip),
                rtol=1e-6,
                err_msg=mode,
            )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_pool_empty_batch_and_empty_seq(mode: str, dtype: type):
    out = _core.pool(np.zeros((0, 6, 5), dtype), np.zeros((0, 6), np.int64), mode)
    assert out.shape == (0, 5) and out.dtype == np.float32
    out = _core.pool(np.ones((2, 0, 5), dtype), np.zeros((2, 0), np.int64), mode)
    np.testing.assert_array_equal(out, np.zeros((2, 5), np.float32))


@pytest.mark.parametrize("mask_dtype", [np.bool_, np.int8, np.int32, np.uint8, np.uint64])
def test_pool_mask_dtypes_are_cast(mask_dtype: type):
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((4, 6, 7)).astype(np.float32)
    mask = (rng.random((4, 6)) < 0.6).astype(mask_dtype)
    for mode in MODES:
        np.testing.assert_allclose(
            _core.pool(hidden, mask, mode), ref_pool(hidden, mask, mode), rtol=1e-6
        )


def test_pool_nonbinary_mask_counts_nonzero_as_present():
    hidden = np.arange(12, dtype=np.float32).reshape(1, 4, 3)
    mask = np.array([[2, 0, -1, 0]])
    np.testing.assert_array_equal(_core.pool(hidden, mask, "mean"), [[3.0, 4.0, 5.0]])
    np.testing.assert_array_equal(_core.pool(hidden, mask, "last"), [[6.0, 7.0, 8.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("where", [0, 1, 2])
def test_pool_max_keeps_a_nan_wherever_the_token_is(dtype: type, where: int):
    """torch.max (sentence-transformers' max pooling) and NumPy's max return NaN for a column
    holding one; the answer must not depend on which token it is in."""
    hidden = np.array([[[1.0, 5.0], [2.0, 4.0], [3.0, 6.0]]], dtype)
    hidden[0, where, 0] = np.nan
    got = _core.pool(hidden, np.ones((1, 3), np.int64), "max")
    assert np.isnan(got[0, 0])
    assert got[0, 1] == 6.0
    np.testing.assert_array_equal(got, ref_pool(hidden, np.ones((1, 3)), "max"))


def test_pool_float64_and_big_endian_hidden_are_cast():
    rng = np.random.default_rng(2)
    hidden = rng.standard_normal((2, 3, 4))
    mask = np.ones((2, 3), np.int64)
    want = _core.pool(hidden.astype(np.float32), mask, "mean")
    np.testing.assert_array_equal(_core.pool(hidden, mask, "mean"), want)
    np.testing.assert_array_equal(_core.pool(hidden.astype(">f4"), mask, "mean"), want)
    half = hidden.astype(np.float16)
    np.testing.assert_array_equal(
        _core.pool(half.astype(">f2"), mask, "cls"), _core.pool(half, mask, "cls")
    )


@pytest.mark.parametrize(
    ("hidden", "mask", "mode", "fragments"),
    [
        (np.zeros((2, 3), np.float32), np.ones((2, 3), np.int64), "mean", ["3-D", "(2, 3)"]),
        (np.zeros((2, 3, 4, 5), np.float32), np.ones((2, 3), np.int64), "mean", ["(2, 3, 4, 5)"]),
        (np.zeros((2, 3, 4), np.int64), np.ones((2, 3), np.int64), "mean", ["int64", "(2, 3, 4)"]),
        (np.zeros((2, 3, 4), np.float32), np.ones((2, 5), np.int64), "mean", ["(2, 3)", "(2, 5)"]),
        (np.zeros((2, 3, 4), np.float32), np.ones((2,), np.int64), "mean", ["(2, 3)", "(2,)"]),
        (np.zeros((2, 3, 4), np.float32), np.ones((2, 3), np.float32), "mean", ["float32"]),
        (
            np.zeros((2, 3, 4), np.float32),
            np.ones((2, 3), np.int64),
            "lasttoken",
            ["'lasttoken'", "'mean'", "'last'", "'weightedmean'"],
        ),
    ],
)
def test_pool_rejects_bad_input(hidden, mask, mode, fragments):
    with pytest.raises(ValueError) as info:
        _core.pool(hidden, mask, mode)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("skip", "fragments"),
    [
        (np.zeros(3, np.int64), ["(2,)", "(3,)"]),
        (np.zeros((2, 1), np.int64), ["(2,)", "(2, 1)"]),
        (np.zeros(2, np.float32), ["integer", "float32"]),
    ],
)
def test_pool_rejects_bad_skip(skip, fragments):
    with pytest.raises(ValueError) as info:
        _core.pool(np.zeros((2, 3, 4), np.float32), np.ones((2, 3), np.int64), "mean", skip)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_pool_threads_agree():
    rng = np.random.default_rng(3)
    hidden = rng.standard_normal((32, 64, 96)).astype(np.float32)
    mask = (rng.random((32, 64)) < 0.8).astype(np.int64)
    want = _core.pool(hidden, mask, "mean")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _core.pool(hidden, mask, "mean"), range(16)))
    for got in results:
        np.testing.assert_array_equal(got, want)


# -- cut + normalize ---------------------------------------------------------------------------


@st.composite
def matrices(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(0, 5))
    d = draw(dims)
    x = draw(hnp.arrays(np.float32, (n, d), elements=f32_elements))
    if n and draw(st.booleans()):
        x[draw(st.integers(0, n - 1))] = 0.0  # a zero row must stay zero, not NaN
    return x


def ref_cut_and_normalize(x: np.ndarray, k: int, normalize: bool) -> np.ndarray:
    cut = x[:, :k].astype(np.float64)
    if normalize:
        cut = cut / np.maximum(np.sqrt((cut * cut).sum(1, keepdims=True)), 1e-12)
    return cut.astype(np.float32)


@SETTINGS
@given(x=matrices(), data=st.data(), normalize=st.booleans(), layout=layouts)
def test_cut_and_normalize_matches_numpy(x, data, normalize: bool, layout: str):
    d = x.shape[1]
    dimensions = data.draw(st.one_of(st.none(), st.integers(1, d)))
    k = d if dimensions is None else dimensions
    got = _core.cut_and_normalize(relayout(x, layout), dimensions, normalize)
    assert got.dtype == np.float32 and got.shape == (x.shape[0], k)
    want = ref_cut_and_normalize(x, k, normalize)
    if normalize:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-44)
        assert np.isfinite(got).all()
    else:
        np.testing.assert_array_equal(got, want)


@SETTINGS
@given(x=matrices(), data=st.data(), normalize=st.booleans())
def test_cut_and_normalize_inplace_matches_copy(x, data, normalize: bool):
    d = x.shape[1]
    dimensions = data.draw(st.one_of(st.none(), st.integers(1, d)))
    k = d if dimensions is None else dimensions
    want = _core.cut_and_normalize(x, dimensions, normalize)
    buffer = x.copy()
    view = _core.cut_and_normalize_(buffer, dimensions, normalize)
    assert view.shape == (x.shape[0], k)
    assert np.shares_memory(view, buffer) or view.size == 0
    np.testing.assert_array_equal(view, want)
    np.testing.assert_array_equal(buffer[:, :k], want)
    np.testing.assert_array_equal(buffer[:, k:], x[:, k:])


def test_normalize_zero_row_and_unit_norm():
    x = np.array([[0, 0, 0], [3, 4, 12]], np.float32)
    got = _core.cut_and_normalize(x)
    np.testing.assert_array_equal(got[0], [0, 0, 0])
    np.testing.assert_allclose(got[1], np.array([3, 4, 12]) / 13, rtol=1e-7)
    np.testing.assert_allclose(_core.cut_and_normalize(x, 2)[1], [0.6, 0.8], rtol=1e-7)


def test_cut_and_normalize_empty_rows():
    assert _core.cut_and_normalize(np.zeros((0, 8), np.float32), 3).shape == (0, 3)
    x = np.zeros((0, 8), np.float32)
    assert _core.cut_and_normalize_(x, 3).shape == (0, 3)


# Past int64 too: a Python int too big for C++ is out of range like any other, not pybind11's
# RuntimeError.
@pytest.mark.parametrize("dimensions", [0, -1, 9, 100, 2**63, 2**70, -(2**70)])
def test_cut_and_normalize_rejects_bad_dimensions(dimensions: int):
    x = np.ones((2, 8), np.float32)
    message = f"dimensions must be between 1 and 8, got {dimensions}"
    with pytest.raises(ValueError, match=message):
        _core.cut_and_normalize(x, dimensions)
    with pytest.raises(ValueError, match=message):
        _core.cut_and_normalize_(x, dimensions)


@pytest.mark.parametrize("integer", [np.int64, np.int32, np.uint8])
def test_cut_and_normalize_takes_numpy_integer_dimensions(integer: type):
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    want = _core.cut_and_normalize(x, 3)
    np.testing.assert_array_equal(_core.cut_and_normalize(x, integer(3)), want)
    np.testing.assert_array_equal(_core.cut_and_normalize_(x.copy(), integer(3)), want)


@pytest.mark.parametrize("dimensions", [True, np.True_, 3.0, "3"])
def test_cut_and_normalize_refuses_non_integer_dimensions(dimensions: object):
    with pytest.raises(TypeError, match="dimensions must be an int or None"):
        _core.cut_and_normalize(np.ones((2, 8), np.float32), dimensions)


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda: np.ones((4, 6), np.float64), ["float64", "(4, 6)"]),
        (lambda: np.ones((6, 4), np.float32).T, ["C-contiguous", "(4, 6)"]),
        (lambda: np.ones((4, 12), np.float32)[:, ::2], ["C-contiguous", "(4, 6)"]),
        (lambda: np.ones((4, 6), np.float32)[None], ["(1, 4, 6)"]),
        (lambda: np.ones((4, 6), ">f4"), [">f4", "(4, 6)"]),
        (lambda: [[1.0, 2.0]], ["list"]),
    ],
)
def test_cut_and_normalize_inplace_rejects(make, fragments):
    with pytest.raises(ValueError) as info:
        _core.cut_and_normalize_(make())
    for fragment in fragments:
        assert fragment in str(info.value)


def misaligned(values: np.ndarray) -> np.ndarray:
    """A copy of `values` one byte past an aligned address: C-contiguous, writable, native
    order, and not aligned to its item size (np.frombuffer and struct-packed records give these)."""
    out = np.ndarray(values.shape, values.dtype, buffer=bytearray(values.nbytes + 1), offset=1)
    out[...] = values
    assert not out.flags.aligned and out.flags.c_contiguous and out.flags.writeable
    return out


def test_cut_and_normalize_inplace_rejects_misaligned():
    """The kernel would read and write floats at addresses C++ may assume aligned (undefined
    behaviour; SSE instructions with memory operands fault on them)."""
    x = misaligned(np.ones((4, 6), np.float32))
    with pytest.raises(ValueError, match=r"aligned.*\(4, 6\)"):
        _core.cut_and_normalize_(x)
    np.testing.assert_array_equal(x, np.ones((4, 6), np.float32))


def test_misaligned_inputs_are_copied_and_give_the_same_answers():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 13)).astype(np.float32)
    lo, hi = np.full(13, -1.0, np.float32), np.full(13, 1.0, np.float32)
    odd = misaligned(x)
    np.testing.assert_array_equal(_core.cut_and_normalize(odd, 5), _core.cut_and_normalize(x, 5))
    assert _core.encode_base64(odd) == _core.encode_base64(x)
    assert _core.encode_json(odd) == _core.encode_json(x)
    np.testing.assert_array_equal(_core.pack_bits(odd), _core.pack_bits(x))
    np.testing.assert_array_equal(
        _core.quantize(odd, misaligned(lo), misaligned(hi)), _core.quantize(x, lo, hi)
    )
    hidden = rng.standard_normal((2, 5, 13)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    for mode in MODES:
        want = _core.pool(hidden, mask, mode)
        np.testing.assert_array_equal(_core.pool(misaligned(hidden), misaligned(mask), mode), want)
        half = hidden.astype(np.float16)
        want = _core.pool(half, mask, mode)
        np.testing.assert_array_equal(_core.pool(misaligned(half), mask, mode), want)


def test_cut_and_normalize_inplace_rejects_read_only():
    x = np.ones((4, 6), np.float32)
    x.setflags(write=False)
    with pytest.raises(ValueError, match=r"read-only.*\(4, 6\)"):
        _core.cut_and_normalize_(x)


# -- base64 ------------------------------------------------------------------------------------


@SETTINGS
@given(
    x=hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 5), st.one_of(st.integers(0, 9), st.sampled_from([385, 1024]))),
        elements=st.floats(width=32),  # nan and inf are just bits here
    ),
    layout=layouts,
)
def test_encode_base64_matches_stdlib(x: np.ndarray, layout: str):
    got = _core.encode_base64(relayout(x, layout))
    assert got == [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in x]


def test_encode_base64_big_endian_and_float64_input():
    x = np.random.default_rng(4).standard_normal((3, 5))
    want = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in x]
    assert _core.encode_base64(x) == want
    assert _core.encode_base64(x.astype(">f4")) == want


# -- JSON --------------------------------------------------------------------------------------


def assert_json_round_trips(x: np.ndarray, texts: list[str]) -> None:
    assert len(texts) == x.shape[0]
    for row, text in zip(x, texts, strict=True):
        assert " " not in text and text.startswith("[") and text.endswith("]")
        back = np.array(json.loads(text), dtype=np.float64).astype(np.float32)
        assert back.shape == row.shape
        # Bitwise: the exact float32, sign of zero included.
        assert np.array_equal(back.view(np.uint32), row.view(np.uint32)), text


@SETTINGS
@given(
    x=hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 5), st.one_of(st.integers(0, 9), st.sampled_from([385]))),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    ),
    layout=layouts,
)
def test_encode_json_round_trips_exactly(x: np.ndarray, layout: str):
    assert_json_round_trips(x, _core.encode_json(relayout(x, layout)))


def test_encode_json_round_trips_random_bit_patterns():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 1 << 32, size=200_000, dtype=np.uint32).view(np.float32)
    x = x[np.isfinite(x)]
    edges = np.array(
        [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1e-45,
            -1e-45,
            1.1754942e-38,
            1.17549435e-38,
            3.4028235e38,
            -3.4028235e38,
            16777216.0,
            16777217.0,
            123456790.0,
            1e-5,
            1e20,
            0.3,
        ],
        dtype=np.float32,
    )
    x = np.concatenate([edges, x])
    x = x[: x.size // 1000 * 1000].reshape(-1, 1000)
    assert_json_round_trips(x, _core.encode_json(x))


def test_encode_json_text_form():
    x = np.array([[1.0, -0.0, 0.5, 1e-5, 3.0e38, 0.1]], np.float32)
    assert _core.encode_json(x) == ["[1.0,-0.0,0.5,1e-05,3e+38,0.1]"]
    assert _core.encode_json(np.zeros((2, 0), np.float32)) == ["[]", "[]"]
    assert _core.encode_json(np.zeros((0, 4), np.float32)) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(("row", "col"), [(0, 0), (2, 5), (3, 6)])
def test_encode_json_rejects_non_finite(bad: float, row: int, col: int):
    x = np.ones((4, 7), np.float32)
    x[row, col] = bad
    with pytest.raises(ValueError, match=rf"x\[{row}, {col}\] is {bad}"):
        _core.encode_json(x)


# -- shared argument checks --------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["cut_and_normalize", "encode_base64", "encode_json"])
@pytest.mark.parametrize(
    ("x", "fragments"),
    [
        (np.ones(5, np.float32), ["2-D", "(5,)"]),
        (np.ones((2, 3, 4), np.float32), ["2-D", "(2, 3, 4)"]),
        (np.ones((2, 3), np.int32), ["int32", "(2, 3)"]),
        (np.array([["a", "b"]]), ["<U1", "(1, 2)"]),
    ],
)
def test_matrix_kernels_reject_bad_input(kernel: str, x: np.ndarray, fragments: list[str]):
    with pytest.raises(ValueError) as info:
        getattr(_core, kernel)(x)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_kernels_have_docstrings():
    assert _core.__doc__
    for name in ("pool", "cut_and_normalize", "cut_and_normalize_", "encode_base64", "encode_json"):
        assert len(getattr(_core, name).__doc__) > 100
