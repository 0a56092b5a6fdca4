"""Whatever a client sends, the answer is a 2xx or an OpenAI-shaped 4xx, never a 500."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import MODEL, auth

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = {
    "model": st.sampled_from([MODEL, "nope", ""]) | json_values,
    "input": st.text(max_size=30)
    | st.lists(st.text(max_size=20), max_size=4)
    | st.lists(st.integers(-5, 40000), max_size=6)
    | st.lists(st.lists(st.integers(-5, 40000), max_size=5), max_size=3)
    | json_values,
    "encoding_format": st.sampled_from(["float", "base64", "int8"]) | json_values,
    "dimensions": st.integers(-2, 500) | json_values,
    "user": st.text(max_size=5) | json_values,
    "metadata": st.dictionaries(st.text(max_size=70), st.text(max_size=5), max_size=3)
    | json_values,
    "input_type": st.sampled_from(["text", "query", "document", "x"]) | json_values,
    "truncate": json_values,
    "truncation_direction": st.sampled_from(["left", "right", "up"]) | json_values,
    "normalize": json_values,
    "prompt_name": json_values,
    "extra_body": json_values,
    "unknown": json_values,
}
bodies = st.fixed_dictionaries({}, optional=fields)
paths = st.sampled_from(
    [
        "/v1/embeddings",
        "/embeddings",
        "/embeddings?api-version=v1",
        "/models/embeddings?api-version=2024-05-01-preview",
        f"/openai/deployments/{MODEL}/embeddings?api-version=2024-10-21",
    ]
)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=auth(), timeout=60) as client:
        yield client


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code == 200:
        assert list(body) == ["object", "data", "model", "usage"]
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, path=paths)
def test_structured_bodies(http, body, path):
    check(
        http.post(
            path, content=msgspec.json.encode(body), headers={"Content-Type": "application/json"}
        )
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=64) | json_values.map(msgspec.json.encode))
def test_arbitrary_bytes(http, raw):
    check(http.post("/v1/embeddings", content=raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"input":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"input": "\\ud800"}',
        b'{"input": "a", "dimensions": 1e999}',
    ],
)
def test_pathological_json(http, raw):
    response = http.post("/v1/embeddings", content=raw)
    assert response.status_code == 400
    check(response)
