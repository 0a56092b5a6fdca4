"""A BGE-M3 folder served by `--model DIR=name`: its dense vectors on the embedding routes, its
sparse head on /embed_sparse, its ColBERT head on /embed_all and MaxSim on rerank and score, each
against FlagEmbedding's BGEM3FlagModel on the tiny random BGE-M3 folder (tests/support/bge_m3.py).
Texts of mixed lengths, one past the model's 64 tokens (truncated on both sides)."""

from __future__ import annotations

import base64
import warnings

import httpx
import numpy as np
import pytest
from embedserve.server.config import ModelSpec
from embedserve.sparse import SparseVector

from ..models.test_sparse import assert_close
from ..support.cross_encoders import QUERIES
from .conftest import MODEL, live_server, unhurried

M3 = "m3"
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def texts(reference) -> list[str]:
    return [*QUERIES, *reference["texts"][:12], " ".join(reference["texts"][:20])]


@pytest.fixture(scope="module")
def m3_dir(sparse_dirs):
    return sparse_dirs["bge_m3"]


@pytest.fixture(scope="module")
def flag(m3_dir, texts):
    """FlagEmbedding's sparse weights and ColBERT vectors of `texts`, and the model."""
    from FlagEmbedding import BGEM3FlagModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BGEM3FlagModel(str(m3_dir), use_fp16=False, devices="cpu")
        out = model.encode(
            texts,
            max_length=MAX_LENGTH,
            return_dense=True,
            return_sparse=True,
            return_colbert_vecs=True,
        )
    return model, out


@pytest.fixture(scope="module")
def live(engine, m3_dir):
    """MiniLM first (an embedder only), the BGE-M3 folder second, loaded by the server."""
    config = unhurried(models=(ModelSpec(MODEL), ModelSpec(str(m3_dir), M3)))
    with live_server(config, engines={MODEL: engine}) as server:
        yield server


def post(live, path: str, body: object) -> httpx.Response:
    return httpx.post(live.url + path, json=body, timeout=60)


def _vector(row: list[dict]) -> SparseVector:
    """One /embed_sparse row as the library's SparseVector (ascending ids, as the route sends)."""
    return SparseVector(
        np.array([p["index"] for p in row], dtype=np.int64),
        np.array([p["value"] for p in row], dtype=np.float32),
    )


def test_embed_sparse_is_flagembedding_s_lexical_weights(live, flag, texts):
    # /embed_sparse names no model: the first that gives sparse vectors, the BGE-M3 here.
    response = post(live, "/embed_sparse", {"inputs": texts})
    assert response.status_code == 200, response.text
    _, out = flag
    for i, (row, want) in enumerate(zip(response.json(), out["lexical_weights"], strict=True)):
        assert_close(_vector(row), {int(k): float(v) for k, v in want.items()}, f"text {i}")
    assert not {0, 1, 2, 3} & {p["index"] for row in response.json() for p in row}


def test_embed_all_is_flagembedding_s_colbert_vecs(live, flag, texts):
    _, out = flag
    for encoding in ("float", "base64"):
        response = post(
            live, "/embed_all", {"model": M3, "inputs": texts, "encoding_format": encoding}
        )
        assert response.status_code == 200, response.text
        for got, want in zip(response.json(), out["colbert_vecs"], strict=True):
            if encoding == "base64":
                got = np.frombuffer(base64.b64decode(got), "<f4").reshape(-1, want.shape[1])
            got = np.asarray(got, dtype=np.float64)
            assert got.shape == want.shape
            cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
            assert cos.min() >= 0.99999


def test_rerank_and_score_are_flagembedding_s_colbert_score(live, flag, texts):
    model, out = flag
    query, documents = texts[1], texts[3:9]
    q_vecs = out["colbert_vecs"][1]
    expected = np.array([float(model.colbert_score(q_vecs, d)) for d in out["colbert_vecs"][3:9]])
    ranked = post(live, "/v1/rerank", {"model": M3, "query": query, "documents": documents})
    assert ranked.status_code == 200, ranked.text
    results = ranked.json()["results"]
    assert [r["index"] for r in results] == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose(
        [r["relevance_score"] for r in results], np.sort(expected)[::-1], rtol=1e-5, atol=1e-6
    )
    scored = post(live, "/v1/score", {"model": M3, "text_1": query, "text_2": documents})
    assert scored.status_code == 200, scored.text
    np.testing.assert_allclose(
        [d["score"] for d in scored.json()["data"]], expected, rtol=1e-5, atol=1e-6
    )


def test_dense_routes_still_answer(live, m3_dir):
    response = post(live, "/v1/embeddings", {"model": M3, "input": ["hello", "world"]})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 2 and len(data[0]["embedding"]) == 32


def test_models_without_the_heads_still_answer_wrong_kind(live):
    for path, body in (
        ("/embed_all", {"model": MODEL, "inputs": "x"}),  # MiniLM: its hidden states, as before
        ("/v1/rerank", {"model": MODEL, "query": "q", "documents": ["d"]}),
        ("/v1/score", {"model": MODEL, "text_1": "q", "text_2": ["d"]}),
    ):
        response = post(live, path, body)
        if path == "/embed_all":
            assert response.status_code == 200 and len(response.json()[0][0]) == 384
        else:
            assert response.status_code == 400, response.text
            assert f"The model `{MODEL}` is an embedding model" in response.text


def test_an_int8_embedder_s_sparse_head_runs_fp32_on_its_own(m3_dir, flag, texts):
    """Served int8, the embedder's session gives no fp32 token states: the sparse head opens an
    fp32 session of its own and still answers FlagEmbedding's weights."""
    config = unhurried(models=(ModelSpec(str(m3_dir), M3),), precision="int8")
    with live_server(config) as server:
        response = post(server, "/embed_sparse", {"inputs": texts[:4]})
        assert response.status_code == 200, response.text
        _, out = flag
        for i, (row, want) in enumerate(zip(response.json(), out["lexical_weights"][:4])):
            assert_close(_vector(row), {int(k): float(v) for k, v in want.items()}, f"text {i}")
