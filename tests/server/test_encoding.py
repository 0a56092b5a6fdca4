"""The response body the C++ encoders assemble, against json/base64 from the standard library."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from embedserve.server.encoding import embeddings_body


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 384), (0, 4)])
def test_float_body_is_the_json_python_would_write(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    body = json.loads(embeddings_body(x, encoding_format="float", model="m/ü", prompt_tokens=12))
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": body["data"][i]["embedding"]}
            for i in range(shape[0])
        ],
        "model": "m/ü",
        "usage": {"prompt_tokens": 12, "total_tokens": 12},
    }
    np.testing.assert_array_equal(
        np.asarray([d["embedding"] for d in body["data"]], np.float32).reshape(shape), x
    )


def test_base64_body_is_little_endian_float32():
    x = np.random.default_rng(1).standard_normal((4, 9)).astype(np.float32)
    body = json.loads(embeddings_body(x, encoding_format="base64", model="m", prompt_tokens=1))
    for row, item in zip(x, body["data"], strict=True):
        assert item["embedding"] == base64.b64encode(row.astype("<f4").tobytes()).decode()


def test_a_cut_view_is_encoded_by_its_visible_columns():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)[:, :2]
    body = json.loads(embeddings_body(x, encoding_format="float", model="m", prompt_tokens=0))
    assert [d["embedding"] for d in body["data"]] == [[0.0, 1.0], [4.0, 5.0], [8.0, 9.0]]


def test_non_finite_vectors_are_refused_naming_the_first_input_that_holds_one():
    from embedserve.server.encoding import check_finite
    from embedserve.server.errors import ApiError

    x = np.ones((3, 4), np.float32)
    x[2, 1], x[1, 3] = np.nan, -np.inf
    with pytest.raises(ApiError) as caught:
        check_finite(x, lambda i: f"input[{i}]")
    assert caught.value.status == 500
    assert "non-finite value (-inf) for input[1];" in caught.value.message
    # Values whose float32 sum overflows are finite all the same.
    check_finite(np.full((4, 8), 3e38, np.float32), lambda i: f"input[{i}]")


def test_non_finite_scores_and_per_input_arrays_are_refused_naming_the_input():
    from embedserve.server.encoding import check_finite, check_finite_each
    from embedserve.server.errors import ApiError

    scores = np.array([0.5, np.inf, np.nan], np.float32)  # one score an input: rerank, MaxSim
    with pytest.raises(ApiError, match=r"non-finite value \(inf\) for documents\[1\];"):
        check_finite(scores, lambda i: f"documents[{i}]")
    # Each input its own array (token vectors, sparse weights), empty ones included.
    arrays = [np.ones((3, 4), np.float32), np.zeros(0, np.float32), np.full((2, 4), np.nan)]
    with pytest.raises(ApiError, match=r"non-finite value \(nan\) for inputs\[2\];"):
        check_finite_each(arrays, lambda i: f"inputs[{i}]")
    check_finite_each(arrays[:2], lambda i: f"inputs[{i}]")
