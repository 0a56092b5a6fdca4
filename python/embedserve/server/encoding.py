"""The embeddings response body, assembled from rows the C++ encoders write, not float by float."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import msgspec
import numpy as np
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from embedserve import _core
from embedserve.quantization import BYTE_ENCODINGS, quantize
from embedserve.server.errors import SERVER_ERROR, ApiError

log = logging.getLogger(__name__)


def check_finite(matrix: np.ndarray, name: Callable[[int], str]) -> None:
    """Refuse vectors holding NaN or infinity (a broken checkpoint, float16 overflow): a 500
    in the route's error shape naming the input, for every encoding. JSON has no way to write
    them; base64 would carry them through, and the byte encodings turn them into -128s or zero
    bits without a word, vectors that poison an index in silence. `name(i)` names input i as
    the API calls it (`input[0]`)."""
    if np.isfinite(matrix.sum(dtype=np.float64)):  # one pass, no mask, for the usual answer
        return
    matrix = matrix.reshape(len(matrix), -1)  # one row an input: a score, a vector, logits
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size == 0:  # the sum overflowed; every value is finite
        return
    row = int(bad[0])
    value = matrix[row][~np.isfinite(matrix[row])][0]
    message = (
        f"the model produced a non-finite value ({value}) for {name(row)}; its weights or "
        "the precision it runs in (float16 overflow) are at fault, not the request"
    )
    log.error("%s (%d of %d inputs)", message, bad.size, len(matrix))
    raise ApiError(
        HTTP_500_INTERNAL_SERVER_ERROR, message, type=SERVER_ERROR, code="non_finite_output"
    )


def check_finite_each(arrays: Sequence[np.ndarray], name: Callable[[int], str]) -> None:
    """`check_finite` for inputs that each have an array of their own (a text's token vectors,
    a sparse vector's weights): `name(i)` names input i."""
    for index, array in enumerate(arrays):
        check_finite(array.reshape(1, -1), lambda _row, index=index: name(index))


def embeddings_body(
    vectors: np.ndarray, *, encoding_format: str, model: str, prompt_tokens: int
) -> bytes:
    """`{"object":"list","data":[...],"model":...,"usage":{...}}` as UTF-8 JSON bytes.

    Each row is JSON array text (`float`) or base64 of little-endian float32 (`base64`), written
    by `_core`; Python only joins whole rows, so a 2,048 × 1,024 answer costs 2,048 string joins,
    not two million float conversions.
    """
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if encoding_format == "base64":
        rows = [f'"{row}"' for row in _core.encode_base64(matrix)]
    elif encoding_format in BYTE_ENCODINGS:
        # Infinity's extension: arrays of byte values; integers are cheap to write from Python.
        rows = byte_rows(quantize(matrix, encoding_format))
    else:
        rows = _core.encode_json(matrix)
    items = ",".join(
        f'{{"object":"embedding","index":{index},"embedding":{row}}}'
        for index, row in enumerate(rows)
    )
    tail = msgspec.json.encode(
        {"model": model, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    )
    # tail is '{"model":...,"usage":...}': drop its opening brace to continue the outer object.
    return b'{"object":"list","data":[' + items.encode("ascii") + b"]," + tail[1:]


def byte_rows(codes: np.ndarray) -> list[str]:
    """Each row of an int8/uint8 matrix as JSON array text."""
    return [msgspec.json.encode(row).decode("ascii") for row in codes.tolist()]
