"""Batch keys (issue #23): a request that authenticates with a `--batch-api-key` is batch work on
every route, whatever its `X-Priority` header or `priority` field asks; a plain key may still ask
for batch. Observed as in test_request_priority.py, by decisions and order, never speed: the
model is held at its door (GatedEngine) while the queue is arranged.

- Admission: with 1.5 s of work queued against a 2 s ceiling, batch work (admitted up to half
  of it) gets 429 before its body is read, in the route's own error shape; interactive work does
  not (a malformed body then gets the route's 400 instead).
- Order: a batch key's request queued first is served after an interactive one queued later.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import httpx
import pytest
from embedserve.admission import Priority
from embedserve.server.auth import ApiKeys
from embedserve.server.errors import ApiError

from ..server.conftest import live_server, unhurried, wait_for
from ..support.gated import GatedEngine, background, hold_the_model, queued_behind_a_held_run
from .conftest import MODEL

PLAIN = "sk-plain"
BATCH = "sk-corpus-job"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class Route:
    path: str
    body: dict
    body_field: bool  # whether the wire format takes a `priority` body field

    def message(self, response: httpx.Response) -> str:
        """The error message, from whichever shape the route's API answers in (shapes.py)."""
        body = response.json()
        if "message" in body:  # Cohere
            return body["message"]
        error = body["error"]
        return error["message"] if isinstance(error, dict) else error  # OpenAI; TEI, Ollama


ROUTES = [
    Route("/v1/embeddings", {"model": MODEL, "input": "a corpus line"}, body_field=True),
    Route("/embed", {"inputs": "a corpus line"}, body_field=False),  # TEI
    Route(
        "/v2/embed",  # Cohere
        {"model": MODEL, "texts": ["a corpus line"], "input_type": "search_document"},
        body_field=False,
    ),
    Route("/v1/rerank", {"model": MODEL, "query": "q", "documents": ["d"]}, body_field=True),
    Route("/api/embed", {"model": MODEL, "input": "a corpus line"}, body_field=False),  # Ollama
]


@pytest.fixture(scope="module")
def crowded(engine) -> Iterator:
    """A server with a plain and a batch key whose model is held while 1.5 s of interactive work
    (at a rate the test sets) waits in its queue: over batch's limit, half the 2 s ceiling, and
    within interactive's."""
    gated = GatedEngine(engine)
    config = unhurried(max_wait_seconds=2.0, api_keys=(PLAIN,), batch_api_keys=(BATCH,))
    with live_server(config, engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher

        def send(body: dict) -> httpx.Response:
            return post(server, "/v1/embeddings", body)

        with queued_behind_a_held_run(gated, batcher, send, MODEL):
            yield server


def post(server, path: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    headers = {**bearer(PLAIN), **(headers or {})}
    if isinstance(body, bytes):
        return httpx.post(server.url + path, content=body, headers=headers, timeout=30)
    return httpx.post(server.url + path, json=body, headers=headers, timeout=30)


def refused_as_batch(route: Route, response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert "would finish in about 1.5s" in route.message(response)
    assert 1 <= int(response.headers["retry-after"]) <= 60


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.path)
def test_a_batch_keys_requests_are_batch_work_whatever_they_ask(crowded, route):
    asks = [
        bearer(BATCH),
        {**bearer(BATCH), "X-Priority": "interactive"},  # the key caps: no upgrade
        {"api-key": BATCH},  # Azure's header
        {"api-key": BATCH, "Authorization": f"Bearer {PLAIN}"},  # any batch key presented caps
    ]
    for headers in asks:
        refused_as_batch(route, post(crowded, route.path, route.body, headers))
    if route.body_field:
        body = {**route.body, "priority": "interactive"}
        refused_as_batch(route, post(crowded, route.path, body, bearer(BATCH)))
    # A plain key may still ask for batch.
    refused_as_batch(route, post(crowded, route.path, route.body, {"X-Priority": "batch"}))
    # A plain key's interactive request passes the refusal before the body: its malformed body
    # is read and gets the route's 400 (nothing is queued). Cut off before any field: a field
    # that is not the route's would be TEI's 422 (an unknown field) before the cut is seen.
    malformed = post(crowded, route.path, b"{", bearer(PLAIN))
    assert malformed.status_code == 400, malformed.text
    assert "would finish" not in route.message(malformed)
    # ... and a batch key's does not get that far.
    refused_as_batch(route, post(crowded, route.path, b"{", bearer(BATCH)))


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.path)
def test_a_wrong_key_is_still_a_401_in_the_routes_shape(crowded, route):
    response = post(crowded, route.path, route.body, bearer(BATCH + "x"))
    assert response.status_code == 401, response.text
    assert route.message(response) == "Incorrect API key provided."
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        # The body field asks for interactive: the batch key still wins.
        ("/v1/embeddings", {"model": MODEL, "priority": "interactive"}, {}),
        ("/embed", {}, {"X-Priority": "interactive"}),  # TEI
        ("/v2/embed", {"model": MODEL, "input_type": "search_document"}, {}),  # Cohere
    ],
    ids=["openai", "tei", "cohere"],
)
def test_a_batch_keys_request_is_served_after_later_interactive_work(engine, path, body, headers):
    gated = GatedEngine(engine)
    config = unhurried(api_keys=(PLAIN,), batch_api_keys=(BATCH,))
    with live_server(config, engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher
        held = hold_the_model(gated, partial(post, server, "/v1/embeddings"), MODEL)
        texts = [f"batch document {i}" for i in range(5)]
        inputs = {"/v1/embeddings": "input", "/embed": "inputs", "/v2/embed": "texts"}[path]
        batch_body = {**body, inputs: texts}
        batch = background(
            lambda: post(server, path, batch_body, {**bearer(BATCH), **headers}),
        )
        wait_for(lambda: batcher.queued_inputs == 5)
        query = background(
            lambda: post(server, "/v1/embeddings", {"model": MODEL, "input": "a query"})
        )
        wait_for(lambda: batcher.queued_inputs == 6)
        gated.gate.set()
        for thread, out in (held, batch, query):
            thread.join(30)
            assert out["value"].status_code == 200, out
    # The held run, then the interactive query alone, then the batch key's five texts (first
    # in, but in the batch lane).
    assert gated.batches == [1, 1, 5], gated.batches


def test_api_keys_say_which_kind_of_key_matched():
    # Headers as `ApiKeys.check` reads them: a mapping with lower-case names.
    Headers = dict
    keys = ApiKeys(("plain",), ("corpus",))
    assert keys.enabled
    assert keys.check(Headers(authorization="Bearer plain")) is None
    assert keys.check(Headers(authorization="Bearer corpus")) is Priority.BATCH
    assert keys.check(Headers({"api-key": "corpus"})) is Priority.BATCH
    assert keys.check(Headers({"api-key": "corpus", "authorization": "Bearer plain"})) is (
        Priority.BATCH
    )
    with pytest.raises(ApiError) as wrong:
        keys.check(Headers(authorization="Bearer corpusx"))
    assert (wrong.value.status, wrong.value.code) == (401, "invalid_api_key")
    # Batch keys alone still close the server; no keys at all leave it open, uncapped.
    only_batch = ApiKeys((), ("corpus",))
    assert only_batch.enabled
    with pytest.raises(ApiError):
        only_batch.check(Headers())
    assert ApiKeys(()).check(Headers()) is None and not ApiKeys(()).enabled
