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

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest
from embedserve.reranker import Reranker
from embedserve.server.config import ModelSpec, ServerConfig

from ..server.conftest import live_server, unhurried, wait_for
from ..support.gated import background
from .conftest import MODEL, cli_server

RERANKER = "ce"
KEY = "sk-every-route"
HEADERS = {"Authorization": f"Bearer {KEY}"}
# A refusal by the cheap checks takes milliseconds; the old server took seconds to minutes.
QUICK_SECONDS = 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory, cross_encoder_dirs) -> Iterator:
    """`embedserve serve` with the default embedder and a tiny BERT cross-encoder, one key."""
    folder: Path = cross_encoder_dirs["bert"][0]
    tmp = tmp_path_factory.mktemp("every-route")
    with cli_server(tmp, "--api-key", KEY, "--model", f"{folder}={RERANKER}") as server:
        yield server


def post(url: str, route: str, body: object, timeout: float = 60) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(url + route, json=body, headers=HEADERS, timeout=timeout)
    return response, time.monotonic() - started


def test_tokenize_refuses_ten_megabytes_before_tokenizing(served):
    peak = served.hwm_kb()
    for body in ({"inputs": "a " * 5_000_000}, {"inputs": ["a " * 2_500] * 2_048}):
        response, seconds = post(served.url, "/tokenize", body)
        assert response.status_code == 400, response.text[:300]
        assert response.json()["error_type"] == "Validation"
        assert "characters" in response.json()["error"]
        assert seconds < QUICK_SECONDS, seconds
    assert served.hwm_kb() - peak < 100 * 1024
    # Within the limits it still tokenizes, in bounded steps.
    ok, _ = post(served.url, "/tokenize", {"inputs": ["hello world"] * 300})
    assert ok.status_code == 200 and len(ok.json()) == 300


def poll_health(url: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            assert client.get(url + "/health").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.005)


def health_p99(url: str, seconds: float, during=None) -> float:
    """/health's p99 latency over `seconds`, while `during()` runs (if given)."""
    stop, latencies = threading.Event(), []
    poller = threading.Thread(target=poll_health, args=(url, stop, latencies))
    poller.start()
    try:
        time.sleep(seconds / 2)
        if during is not None:
            during()
        time.sleep(seconds / 2)
    finally:
        stop.set()
        poller.join(30)
    assert len(latencies) > 10
    return float(np.percentile(latencies, 99))


def test_embed_all_refuses_ten_megabytes_and_an_oversized_response_before_inference(served):
    """Token vectors grow with tokens x dimensions: 2,048 long inputs would answer ~800 MB of
    JSON, so the token count is checked against --max-token-values before the model runs."""
    peak = served.hwm_kb()
    response, seconds = post(served.url, "/embed_all", {"inputs": "a " * 5_000_000})
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error_type"] == "Validation" and seconds < QUICK_SECONDS
    long = "the quick brown fox jumps over the lazy dog " * 30
    response, seconds = post(served.url, "/embed_all", {"inputs": [long] * 2_048})
    assert response.status_code == 413, response.text[:300]
    assert "max-token-values" in response.json()["error"]
    assert served.hwm_kb() - peak < 100 * 1024
    ok, _ = post(served.url, "/embed_all", {"inputs": ["hello world"] * 3})
    assert ok.status_code == 200 and len(ok.json()) == 3 and len(ok.json()[0]) == 4


def test_decode_of_millions_of_ids_keeps_the_event_loop_free(served):
    # Encoded before the probe starts: encoding it holds this process's GIL, the probe's too.
    body = msgspec.json.encode({"ids": [1000 + i % 9000 for i in range(3_300_000)]})
    assert len(body) > 16_000_000

    def decode_three_times() -> None:
        for _ in range(3):
            response = httpx.post(served.url + "/decode", content=body, headers=HEADERS, timeout=60)
            assert response.status_code == 400, response.text[:300]
            assert "at most 300000" in response.json()["error"]

    # The old server stalled /health for 9.5 s per request; the goal is p99 < 100 ms. A busy
    # machine slows every probe: the bound is 100 ms or twice the unloaded p99, if higher.
    unloaded = health_p99(served.url, 1.0)
    loaded = health_p99(served.url, 0.4, decode_three_times)
    assert loaded < max(0.1, 2 * unloaded), (loaded, unloaded)
    # Nested arrays, within the limit, still decode.
    ids = post(served.url, "/tokenize", {"inputs": "hello world", "add_special_tokens": False})
    arrays = [[t["id"] for t in ids[0].json()[0]]] * 3
    response, _ = post(served.url, "/decode", {"ids": arrays})
    assert response.json() == ["hello world"] * 3


def test_rerank_refuses_a_five_megabyte_document_before_tokenizing(served):
    peak = served.hwm_kb()
    huge = "word " * 1_000_000
    for route, field in (("/v1/rerank", "documents"), ("/rerank", "texts")):
        body = {"model": RERANKER, "query": "q", field: ["short", huge]}
        response, seconds = post(served.url, route, body)
        assert response.status_code == 400, response.text[:300]
        message = response.json()["message" if route == "/v1/rerank" else "error"]
        assert f"{field}[1] has 5000000 characters" in message
        assert seconds < QUICK_SECONDS, seconds
    # A thousand 16 KB texts, TEI's shape: over the request's characters.
    response, seconds = post(
        served.url, "/rerank", {"query": "q", "texts": ["x" * 16_000] * 1_000}, timeout=60
    )
    assert response.status_code == 400 and "characters in all" in response.json()["error"]
    assert seconds < QUICK_SECONDS, seconds
    assert served.hwm_kb() - peak < 100 * 1024


def test_score_refuses_a_megabyte_text_1_at_once(served):
    body = {"model": RERANKER, "text_1": "a" * 1_000_000, "text_2": ["b"] * 30}
    response, seconds = post(served.url, "/v1/score", body)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("text_1", "context_length_exceeded")
    assert seconds < QUICK_SECONDS, seconds
    empty, _ = post(served.url, "/v1/score", {"model": RERANKER, "text_1": "", "text_2": ["b"]})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_input"


class CountingTokenizer:
    """A reranker's pair tokenizer that records every batch of texts it tokenizes."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.batches: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def content_ids(self, texts):
        self.batches.append(list(texts))
        return self._tokenizer.content_ids(texts)


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


def test_a_rerank_flood_is_refused_before_tokenizing(engine, cross_encoder_dirs):
    gated = GatedReranker(cross_encoder_dirs["bert"][0])
    gated.gate.set()
    # A wait far below what 1,000 pairs of ~128 tokens cost on any CPU.
    cfg = config(max_wait_seconds=0.01)
    long_docs = ["word " * 150] * 1_000
    with live_server(cfg, engines={MODEL: engine, RERANKER: gated}) as server:
        batcher = server.state.registry.find(RERANKER).batcher
        assert rerank(server.url, DOCS[:200]).status_code == 200
        assert batcher.tokens_per_second is not None  # measured on that request

        gated.gate.clear()
        gated.entered.clear()
        held, held_out = background(lambda: rerank(server.url, ["held"]))
        assert gated.entered.wait(10)
        queued, queued_out = background(lambda: rerank(server.url, long_docs))
        wait_for(lambda: batcher.queued_inputs == 1_000)
        tokenized = len(gated.tokenizer.batches)
        for _ in range(8):
            refused = rerank(server.url, long_docs)
            assert refused.status_code == 429, refused.text
            assert refused.json()["message"].startswith("The server is busy")
            retry = int(refused.headers["retry-after"])
            assert 1 <= retry <= 60
        assert len(gated.tokenizer.batches) == tokenized, "a refused rerank was tokenized"
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
