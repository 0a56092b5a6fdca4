"""The exact result cache: pooled vectors by the ids the model saw, bounded by bytes, shared by
the library and every server route; a hit answers the same bytes as the miss before it."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.server.config import ServerConfig
from embedserve.vector_cache import ENTRY_OVERHEAD, VectorCache, cache_key

from .server.conftest import live_server, metric_samples, unhurried

MODEL = "all-MiniLM-L6-v2"
# The third is past the model's 256 tokens, with words that differ from one end to the other.
TEXTS = ["a cached text", "another one", " ".join(f"w{i}" for i in range(400)), "a cached text"]


@pytest.fixture
def cached_engine(minilm_dir) -> Engine:
    """Its own engine, so no other test has filled its cache."""
    return Engine.from_pretrained(minilm_dir, name=MODEL, cache_bytes=8 * 1024 * 1024)


def test_the_cache_holds_at_most_its_bytes_under_100k_distinct_inputs():
    row_bytes, limit = 384 * 4, 4 * 1024 * 1024
    cache = VectorCache(limit)
    rows = np.ones((1_000, 384), np.float32)
    for start in range(0, 100_000, 1_000):
        sequences = [np.array([101, i, 102], np.int64) for i in range(start, start + 1_000)]
        cache.store(sequences, rows * start)
        assert cache.bytes <= limit
    entry = len(cache_key(sequences[0])) + row_bytes + ENTRY_OVERHEAD
    assert len(cache) == limit // entry and cache.bytes == len(cache) * entry
    # Least recently used goes first: the newest inputs stay, a looked-up old one too.
    newest = [np.array([101, 99_999, 102], np.int64)]
    assert cache.lookup(newest)[0] is not None
    assert cache.lookup([np.array([101, 0, 102], np.int64)])[0] is None


def test_a_zero_budget_turns_the_cache_off(minilm_dir):
    engine = Engine.from_pretrained(minilm_dir, name=MODEL, cache_bytes=0)
    first = engine.embed(TEXTS).embeddings
    np.testing.assert_array_equal(engine.embed(TEXTS).embeddings, first)
    assert (engine.cache.hits, len(engine.cache)) == (0, 0)


def test_library_hits_keep_each_calls_own_options(cached_engine):
    raw = cached_engine.embed(TEXTS, normalize=False).embeddings
    # Within one call a repeated text is looked up before anything is stored: 4 misses.
    assert (cached_engine.cache.hits, cached_engine.cache.misses, len(cached_engine.cache)) == (
        0,
        4,
        3,
    )
    normalized = cached_engine.embed(TEXTS).embeddings
    cut = cached_engine.embed(TEXTS, dimensions=64).embeddings
    assert cached_engine.cache.hits == 4 + 4
    # Normalizing or cutting a hit never changes the stored vector.
    np.testing.assert_array_equal(cached_engine.embed(TEXTS, normalize=False).embeddings, raw)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, rtol=1e-6)
    assert cut.shape == (4, 64)
    # Other ids are other entries: the same text cut on the left is another input.
    left = cached_engine.embed(TEXTS[2:3], truncation_direction="left").embeddings
    assert not np.array_equal(left[0], normalized[2])


def test_a_hit_answers_the_same_bytes_as_the_miss(cached_engine):
    with live_server(ServerConfig(), engines={MODEL: cached_engine}) as server:
        for encoding_format in ("float", "base64", "int8"):
            body = {"model": MODEL, "input": TEXTS, "encoding_format": encoding_format}
            miss = httpx.post(server.url + "/v1/embeddings", json=body, timeout=30)
            hit = httpx.post(server.url + "/v1/embeddings", json=body, timeout=30)
            assert miss.status_code == hit.status_code == 200
            assert hit.content == miss.content  # usage included: the model's tokens, as sent
        # Every route shares the model's cache: TEI's route hits what OpenAI's filled.
        tei = httpx.post(server.url + "/embed", json={"inputs": TEXTS}, timeout=30)
        assert tei.status_code == 200
        samples = metric_samples(httpx.get(server.url + "/metrics").text, "embedserve_cache")
        # The first request's 4 inputs missed; every later one hit: 6 requests of 4.
        assert samples[f'embedserve_cache_misses{{model="{MODEL}"}}'] == 4
        assert samples[f'embedserve_cache_hits{{model="{MODEL}"}}'] == 6 * 4
        assert samples[f'embedserve_cache_bytes{{model="{MODEL}"}}'] == cached_engine.cache.bytes


def test_concurrent_identical_requests_get_identical_answers(cached_engine):
    body = {"model": MODEL, "input": [f"concurrent text {i}" for i in range(32)]}
    # Unhurried admission: 16 requests at once must all be served, on a slow machine too.
    with live_server(unhurried(), engines={MODEL: cached_engine}) as server:
        answers: list[bytes] = []

        def send() -> None:
            response = httpx.post(server.url + "/v1/embeddings", json=body, timeout=60)
            assert response.status_code == 200
            answers.append(response.content)

        threads = [threading.Thread(target=send) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(answers) == 16
        vectors = [
            np.array([d["embedding"] for d in httpx.Response(200, content=a).json()["data"]])
            for a in answers
        ]
        for other in vectors[1:]:
            np.testing.assert_allclose(other, vectors[0], rtol=0, atol=1e-6)
        assert len(cached_engine.cache) == 32
