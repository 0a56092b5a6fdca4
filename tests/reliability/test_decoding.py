"""Problem 1: raw invalid UTF-8 in a body was a 500 on every embeddings route; and the policy for
duplicate keys (the last one wins, as in OpenAI's API and Python's json)."""

from __future__ import annotations

import httpx
import pytest

from ..server.conftest import live_server
from .conftest import MODEL, error_of

ROUTES = [
    "/v1/embeddings",
    "/embeddings",
    "/models/embeddings?api-version=2024-05-01-preview",
    f"/openai/deployments/{MODEL}/embeddings?api-version=2024-10-21",
]


@pytest.fixture(scope="module")
def server(engine):
    with live_server(engines={MODEL: engine}) as live:
        yield live


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"all-MiniLM-L6-v2","input":"\xff"}',  # the body
        b'{"model":"all-MiniLM-L6-v2","input":["ok","\xed\xa0\x80"]}',  # a UTF-8 surrogate
        b'{"model":"all-MiniLM-L6-v2","in\xc3put":"a"}',  # a broken key
        b'\xef\xbb\xbf{"model":"all-MiniLM-L6-v2","input":"a"}',  # a byte order mark
    ],
)
def test_invalid_utf8_is_400_invalid_json(server, route, body):
    response = httpx.post(
        server.url + route, content=body, headers={"content-type": "application/json"}
    )
    error = error_of(response, 400, "invalid_json")
    assert error["type"] == "invalid_request_error"
    assert "UTF-8" in error["message"]


def test_duplicate_keys_keep_the_last_value(server, engine):
    body = b'{"model":"all-MiniLM-L6-v2","input":"first","input":"second"}'
    response = httpx.post(
        server.url + "/v1/embeddings", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    got = response.json()["data"][0]["embedding"]
    want = engine.embed(["second"]).embeddings[0]
    assert max(abs(a - b) for a, b in zip(got, want.tolist())) < 1e-5
