"""`/embed_all` and MaxSim rerank/score over HTTP, through the shared pipeline: token vectors of
an embedder and of a ColBERT equal the library's, base64 decodes to the same matrices, the
tokens x dimensions limit answers 413 before inference, and rerank/score on a ColBERT are MaxSim."""

from __future__ import annotations

import base64
import warnings

import httpx
import numpy as np
import pytest
from embedserve.late_interaction import ColBERT
from embedserve.server.config import Limits, ModelSpec

from ..support.cross_encoders import QUERIES
from .conftest import MODEL, live_server, unhurried

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pylate  # noqa: F401 - builds the tiny ColBERT (tests/support/colbert.py)

DOCS = ["the warranty is void.", "you may link against the library", "fees, copies; source!"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, minilm_dir, engine):
    from ..support.colbert import build_colbert

    folder = build_colbert(tmp_path_factory.mktemp("colbert-http"), minilm_dir)
    colbert = ColBERT.from_pretrained(folder, name="colbert")
    config = unhurried(
        models=(ModelSpec(str(minilm_dir), MODEL), ModelSpec(str(folder), "colbert")),
        limits=Limits(max_token_values=50 * 384),
    )
    with live_server(config, engines={MODEL: engine, "colbert": colbert}) as live:
        yield live, engine, colbert


def test_embed_all_of_an_embedder_and_a_colbert(served):
    live, engine, colbert = served
    got = httpx.post(live.url + "/embed_all", json={"inputs": ["hello world", "a b c"]}).json()
    for a, b in zip(got, engine.embed_all(["hello world", "a b c"])):
        np.testing.assert_allclose(np.asarray(a, dtype=np.float32), b, atol=1e-6)
    body = {"inputs": QUERIES[0], "model": "colbert", "is_query": True, "encoding_format": "base64"}
    (text,) = httpx.post(live.url + "/embed_all", json=body).json()
    matrix = np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(-1, 16)
    np.testing.assert_allclose(matrix, colbert.encode(QUERIES[0], is_query=True)[0], atol=1e-6)


def test_embed_all_refuses_a_response_past_the_limit_before_inference(served):
    live, _, _ = served
    response = httpx.post(live.url + "/embed_all", json={"inputs": ["word " * 60]})
    assert response.status_code == 413, response.text
    assert response.json()["error_type"] == "Validation"
    assert "max-token-values" in response.json()["error"]
    bad = httpx.post(live.url + "/embed_all", json={"inputs": [""]})
    assert bad.status_code == 400
    wrong = httpx.post(live.url + "/v1/embeddings", json={"input": "a", "model": "colbert"})
    assert wrong.status_code == 400 and "late-interaction" in wrong.text


def test_rerank_and_score_on_a_colbert_are_maxsim(served):
    live, _, colbert = served
    expected = colbert.score(QUERIES[1], DOCS)
    ranked = httpx.post(
        live.url + "/v1/rerank", json={"model": "colbert", "query": QUERIES[1], "documents": DOCS}
    ).json()["results"]
    assert [r["index"] for r in ranked] == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose(
        [r["relevance_score"] for r in ranked], np.sort(expected)[::-1], rtol=1e-5
    )
    scored = httpx.post(
        live.url + "/v1/score", json={"model": "colbert", "text_1": QUERIES[1], "text_2": DOCS}
    ).json()
    np.testing.assert_allclose([d["score"] for d in scored["data"]], expected, rtol=1e-5)
