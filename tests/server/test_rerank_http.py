"""Reranking over HTTP: the cohere SDK (v1 and v2 clients) and LangChain's CohereRerank unmodified,
httpx for TEI's shape, vLLM's /v1/score and every error, on a server that also embeds."""

from __future__ import annotations

from collections.abc import Iterator

import cohere
import httpx
import numpy as np
import pytest
from embedserve.reranker import Reranker
from embedserve.server.config import Limits, ModelSpec
from embedserve.server.limits import CHUNK_CHARS

from ..support.cross_encoders import QUERIES
from .conftest import KEY, MODEL, LiveServer, auth, live_server, metric_samples, unhurried

RERANKER = "reranker"
LIMIT = 128


@pytest.fixture(scope="module")
def reranker(cross_encoder_dirs) -> Reranker:
    return Reranker.from_pretrained(cross_encoder_dirs["bert"][0], name=RERANKER)


@pytest.fixture(scope="module")
def documents(reference) -> list[str]:
    return list(dict.fromkeys(reference["texts"][1::5]))


@pytest.fixture(scope="module")
def both(engine, reranker, cross_encoder_dirs) -> Iterator[LiveServer]:
    """An embedder first, the reranker second: TEI's shape must find the reranker anyway."""
    config = unhurried(
        models=(ModelSpec(MODEL), ModelSpec(str(cross_encoder_dirs["bert"][0]), RERANKER)),
        api_keys=(KEY,),
        limits=Limits(max_documents=40, max_input_tokens=1200, max_body_bytes=1_000_000),
    )
    with live_server(config, engines={MODEL: engine, RERANKER: reranker}) as live:
        yield live


@pytest.fixture
def http_client() -> Iterator[httpx.Client]:
    """The SDKs' connections, closed after each test (the SDKs leave theirs open)."""
    with httpx.Client(timeout=30) as client:
        yield client


def expected(reranker: Reranker, query: str, documents: list[str], raw: bool = False):
    ranked = reranker.rank(query, documents, raw_scores=raw)
    return [r.index for r in ranked], [r.score for r in ranked]


def test_cohere_v2_client(both, reranker, documents, http_client):
    client = cohere.ClientV2(api_key=KEY, base_url=both.url, httpx_client=http_client)
    for query in QUERIES:
        response = client.rerank(model=RERANKER, query=query, documents=documents, top_n=7)
        order, scores = expected(reranker, query, documents)
        assert [r.index for r in response.results] == order[:7]
        np.testing.assert_allclose(
            [r.relevance_score for r in response.results], scores[:7], atol=1e-6
        )
    assert response.meta.api_version.version == "2"


def test_cohere_v1_client_returns_documents(both, reranker, documents, http_client):
    client = cohere.Client(api_key=KEY, base_url=both.url, httpx_client=http_client)
    response = client.rerank(
        model=RERANKER, query=QUERIES[1], documents=documents, return_documents=True
    )
    order, scores = expected(reranker, QUERIES[1], documents)
    assert [r.index for r in response.results] == order
    assert [r.document.text for r in response.results] == [documents[i] for i in order]
    np.testing.assert_allclose([r.relevance_score for r in response.results], scores, atol=1e-6)
    assert response.meta.api_version.version == "1"


def test_langchain_cohere_rerank(both, reranker, documents, request):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    compressor = CohereRerank(model=RERANKER, base_url=both.url, cohere_api_key=KEY, top_n=3)
    # LangChain never closes the client it makes; close its connections when done.
    request.addfinalizer(compressor.client._client_wrapper.httpx_client.httpx_client.close)
    got = compressor.rerank(documents, QUERIES[2])
    order, scores = expected(reranker, QUERIES[2], documents)
    assert [g["index"] for g in got] == order[:3]
    kept = compressor.compress_documents([Document(page_content=d) for d in documents], QUERIES[2])
    assert [d.page_content for d in kept] == [documents[i] for i in order[:3]]
    np.testing.assert_allclose([d.metadata["relevance_score"] for d in kept], scores[:3], atol=1e-6)


def test_tei_shape_without_a_model(both, reranker, documents):
    response = httpx.post(
        both.url + "/rerank",
        headers=auth(),
        json={"query": QUERIES[0], "texts": documents, "return_text": True},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    order, scores = expected(reranker, QUERIES[0], documents)
    assert [r["index"] for r in body] == order
    assert [r["text"] for r in body] == [documents[i] for i in order]
    np.testing.assert_allclose([r["score"] for r in body], scores, atol=1e-6)
    assert all(0.0 < s < 1.0 for s in scores)

    raw = httpx.post(
        both.url + "/rerank",
        headers=auth(),
        json={"query": QUERIES[0], "texts": documents, "raw_scores": True, "model": RERANKER},
        timeout=30,
    ).json()
    order, logits = expected(reranker, QUERIES[0], documents, raw=True)
    assert [r["index"] for r in raw] == order and "text" not in raw[0]
    np.testing.assert_allclose([r["score"] for r in raw], logits, atol=1e-5)
    assert min(logits) < 0  # raw logits, not probabilities


def test_jina_shape_with_objects_and_usage(both, reranker, documents):
    docs = [{"text": d, "id": n} for n, d in enumerate(documents[:10])]
    response = httpx.post(
        both.url + "/v1/rerank",
        headers=auth(),
        json={
            "model": RERANKER,
            "query": QUERIES[1],
            "documents": docs,
            "top_n": 50,
            "return_documents": True,
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    order, _ = expected(reranker, QUERIES[1], documents[:10])
    assert [r["index"] for r in body["results"]] == order  # top_n past the count: all of them
    assert [r["document"] for r in body["results"]] == [docs[i] for i in order]
    tokens = int(reranker.prepare(QUERIES[1], documents[:10]).token_counts.sum())
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert body["meta"]["tokens"]["input_tokens"] == tokens and body["model"] == RERANKER
    for header in ("x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time"):
        assert float(response.headers[header]) >= 0


def test_max_tokens_per_doc(both, reranker, documents):
    body = httpx.post(
        both.url + "/v2/rerank",
        headers=auth(),
        json={
            "model": RERANKER,
            "query": QUERIES[0],
            "documents": documents,
            "max_tokens_per_doc": 4,
        },
        timeout=30,
    ).json()
    prepared = reranker.prepare(QUERIES[0], documents, max_tokens_per_doc=4)
    scores = reranker.relevance(reranker.logits(prepared.pairs))
    assert [r["index"] for r in body["results"]] == np.argsort(-scores, kind="stable").tolist()
    assert body["usage"]["total_tokens"] == int(prepared.token_counts.sum())


def test_score_route(both, reranker, documents):
    one_to_many = httpx.post(
        both.url + "/v1/score",
        headers=auth(),
        json={"model": RERANKER, "text_1": QUERIES[1], "text_2": documents[:6]},
        timeout=30,
    )
    assert one_to_many.status_code == 200, one_to_many.text
    body = one_to_many.json()
    want = reranker.score([(QUERIES[1], d) for d in documents[:6]])
    assert [d["index"] for d in body["data"]] == list(range(6))
    np.testing.assert_allclose([d["score"] for d in body["data"]], want, atol=1e-6)
    pairwise = httpx.post(
        both.url + "/v1/score",
        headers=auth(),
        json={"text_1": QUERIES, "text_2": documents[:3], "raw_scores": True},
        timeout=30,
    ).json()
    want = reranker.score(list(zip(QUERIES, documents[:3])), raw_scores=True)
    np.testing.assert_allclose([d["score"] for d in pairwise["data"]], want, atol=1e-5)


def test_rerank_metrics(both, documents):
    before = metric_samples(httpx.get(both.url + "/metrics").text, "embedserve_inputs_total")
    httpx.post(
        both.url + "/v1/rerank",
        headers=auth(),
        json={"model": RERANKER, "query": "q", "documents": documents[:4]},
        timeout=30,
    )
    after = metric_samples(httpx.get(both.url + "/metrics").text, "embedserve_inputs_total")
    key = f'embedserve_inputs_total{{model="{RERANKER}"}}'
    assert after[key] - before.get(key, 0.0) == 4


def test_each_route_refuses_the_other_kind(both):
    response = httpx.post(
        both.url + "/v1/rerank",
        headers=auth(),
        json={"model": MODEL, "query": "q", "documents": ["d"]},
    )
    assert response.status_code == 400
    assert f"`{MODEL}` is an embedding model, not a reranker" in response.json()["message"]
    response = httpx.post(
        both.url + "/v1/embeddings", headers=auth(), json={"model": RERANKER, "input": "x"}
    )
    assert response.status_code == 400
    assert "is a reranker, not an embedding model" in response.json()["error"]["message"]
    # The embedder still embeds, on the same server.
    assert (
        httpx.post(
            both.url + "/v1/embeddings", headers=auth(), json={"model": MODEL, "input": "x"}
        ).status_code
        == 200
    )


def test_truncate_false_names_the_document(both, reranker, documents):
    lengths = reranker.prepare(QUERIES[0], documents).untruncated_tokens
    first = int(np.argmax(lengths > LIMIT))
    assert lengths[first] > LIMIT
    for field, route in [("documents", "/v1/rerank"), ("texts", "/rerank")]:
        response = httpx.post(
            both.url + route,
            headers=auth(),
            json={"model": RERANKER, "query": QUERIES[0], field: documents, "truncate": False},
        )
        # TEI answers an input over the model's limit with 422 (Validation), Cohere with 400.
        assert response.status_code == (422 if route == "/rerank" else 400), response.text
        got = response.json()
        message = got["message"] if route == "/v1/rerank" else got["error"]
        assert f"{field}[{first}]" in message and str(LIMIT) in message


def test_a_document_too_long_in_a_later_chunk_is_named_by_its_place_in_the_request(both, documents):
    # Blanks are characters but no tokens: the two padded documents fit the model, and fill
    # the first chunks of CHUNK_CHARS so that the long document is tokenized in a later one.
    padded = [" " * (CHUNK_CHARS - 100) + "ok", " " * (CHUNK_CHARS - 100) + "fine"]
    body = {"model": RERANKER, "query": QUERIES[0], "documents": [*padded, max(documents, key=len)]}
    response = httpx.post(both.url + "/v1/rerank", headers=auth(), json={**body, "truncate": False})
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("documents[2] with the query makes ")


def _error(url: str, body, route: str = "/v1/rerank", headers=None) -> tuple[int, dict]:
    """The status and the error as one dict: Cohere's `{"message"}` on /v1 and /v2/rerank, TEI's
    `{"error", "error_type"}` on /rerank, OpenAI's `{"error": {...}}` on the score routes."""
    content = body if isinstance(body, bytes) else None
    response = httpx.post(
        url + route,
        headers=headers if headers is not None else auth(),
        json=None if content else body,
        content=content,
    )
    got = response.json()
    if route in ("/v1/rerank", "/v2/rerank"):
        assert list(got) == ["message"], got
        return response.status_code, got
    if route == "/rerank":
        assert sorted(got) == ["error", "error_type"], got
        return response.status_code, {"message": got["error"], "error_type": got["error_type"]}
    return response.status_code, got["error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": RERANKER, "documents": ["d"]}, "query"),
        (
            {"model": RERANKER, "query": 3, "documents": ["d"]},
            "query must be a string, not an integer",
        ),
        ({"model": RERANKER, "query": "", "documents": ["d"]}, "empty"),
        ({"model": RERANKER, "query": "q"}, "documents"),
        ({"model": RERANKER, "query": "q", "documents": "d"}, "not a string"),
        (
            {"model": RERANKER, "query": "q", "documents": ["a", 5]},
            "documents[1] must be a string or an object",
        ),
        (
            {"model": RERANKER, "query": "q", "documents": [{"title": "t"}]},
            "documents[0] is an object without a string `text`",
        ),
        ({"model": RERANKER, "query": "q", "documents": []}, "must not be an empty array"),
        ({"model": RERANKER, "query": "q", "documents": ["d"] * 41}, "41 items; at most 40"),
        ({"model": RERANKER, "query": "q", "texts": ["d"] * 41}, "41 items; at most 40"),
        (
            {"model": RERANKER, "query": "q", "documents": ["d"], "top_n": 0},
            "top_n must be at least 1",
        ),
        (
            {"model": RERANKER, "query": "q", "documents": ["d"], "top_n": True},
            "top_n must be an integer, not a boolean",
        ),
        (
            {"model": RERANKER, "query": "q", "documents": ["d"], "max_tokens_per_doc": 0},
            "at least 1",
        ),
        (
            {"model": RERANKER, "query": "q", "documents": ["d"], "rank_fields": ["x"]},
            "rank_fields",
        ),
        ({"model": RERANKER, "query": "q", "documents": ["d"], "texts": ["d"]}, "not both"),
        ({"query": "q", "documents": ["d"]}, "model"),
        ({"query": "q", "texts": ["d"], "truncation_direction": "left"}, "must be 'right'"),
        (
            {"model": RERANKER, "query": "q", "documents": ["word " * 1300]},
            "documents[0] with the query has 1304 tokens; at most 1200",
        ),
        (b"{not json", "could not parse"),
    ],
)
def test_bad_requests(both, body, words):
    """Each mistake in Cohere's error shape on /v1/rerank, and in TEI's on /rerank (with TEI's
    statuses: 400 Empty, 422 Validation; tests/server/test_adapters.py TEI_STATUSES)."""
    status, error = _error(both.url, body)
    assert status == 400, error
    assert words in error["message"]
    if isinstance(body, dict) and body.get("model"):
        status, error = _error(both.url, body, route="/rerank")
        empty = "empty" in words
        assert (status, error["error_type"]) == ((400, "Empty") if empty else (422, "Validation"))
        assert words in error["message"]


def test_tei_rerank_takes_teis_own_spelling_of_the_direction(both):
    """TEI's clients send its enum's "Right", as /embed, /predict and /embed_sparse take it."""
    for spelling in ("Right", "right"):
        body = {"query": "q", "texts": ["d"], "truncation_direction": spelling}
        response = httpx.post(both.url + "/rerank", headers=auth(), json=body)
        assert response.status_code == 200, response.text


def test_score_errors(both):
    status, error = _error(
        both.url, {"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, route="/v1/score"
    )
    assert status == 400 and error["param"] == "text_2" and "same length" in error["message"]
    status, error = _error(both.url, {"text_1": "a", "text_2": [1]}, route="/v1/score")
    assert status == 400 and "text_2[0] must be a string" in error["message"]


def test_keys_models_and_body_limits(both):
    status, error = _error(
        both.url, {"model": RERANKER, "query": "q", "documents": ["d"]}, headers={}
    )
    assert status == 401 and "API key" in error["message"]
    status, error = _error(
        both.url, {"model": "nope", "query": "q", "documents": ["d"]}, route="/v2/rerank"
    )
    assert status == 404 and "`nope` does not exist" in error["message"]
    status, error = _error(
        both.url, {"model": RERANKER, "query": "q", "texts": ["x" * 600_000] * 2}, route="/rerank"
    )
    assert status == 413 and "1000000 bytes" in error["message"]
    assert error["error_type"] == "Validation"


def test_tei_shape_without_any_reranker(server):
    """The default fixture server embeds only: TEI's shape has no reranker to fall back on (TEI
    answers rerank on a model that is no reranker with a Backend error, 424)."""
    status, error = _error(server.url, {"query": "q", "texts": ["d"]}, route="/rerank")
    assert status == 424 and "no reranker is served" in error["message"]
    assert error["error_type"] == "Backend"


def test_a_declared_identity_gives_cross_encoders_logits(cross_encoder_dirs, documents, tmp_path):
    """An ms-marco-style folder whose config.json declares Identity, loaded by the server: each
    route that renders its scores gives CrossEncoder.predict's raw logits (/predict stays the
    text-classification pipeline's, which reads no sentence-transformers activation)."""
    import json
    import shutil

    import torch
    from embedserve.classification import Classifier
    from sentence_transformers import CrossEncoder

    folder = tmp_path / "identity"
    shutil.copytree(cross_encoder_dirs["bert"][0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity"}
    (folder / "config.json").write_text(json.dumps(config))
    torch.set_num_threads(1)
    ce = CrossEncoder(str(folder), device="cpu")
    docs = documents[:8]
    want = ce.predict([(QUERIES[1], d) for d in docs])
    assert (want < 0).any()  # logits: a sigmoid would be in (0, 1)
    config = unhurried(models=(ModelSpec(str(folder), "msmarco"),), api_keys=(KEY,))
    with live_server(config) as live:

        def post(route: str, body: dict) -> dict:
            response = httpx.post(live.url + route, headers=auth(), json=body, timeout=30)
            assert response.status_code == 200, response.text
            return response.json()

        body = {"model": "msmarco", "query": QUERIES[1], "documents": docs}
        results = post("/v1/rerank", body)["results"]
        assert [r["index"] for r in results] == np.argsort(-want, kind="stable").tolist()
        np.testing.assert_allclose(
            [r["relevance_score"] for r in results], np.sort(want)[::-1], atol=1e-4
        )
        tei = post("/rerank", {"query": QUERIES[1], "texts": docs})
        np.testing.assert_allclose(
            [r["score"] for r in sorted(tei, key=lambda r: r["index"])], want, atol=1e-4
        )
        scored = post("/v1/score", {"text_1": QUERIES[1], "text_2": docs})["data"]
        np.testing.assert_allclose([d["score"] for d in scored], want, atol=1e-4)
        predicted = post("/predict", {"inputs": [QUERIES[1], docs[0]]})
        pipeline = Classifier.from_pretrained(folder).predict([(QUERIES[1], docs[0])])[0]
        assert predicted[0]["score"] == pytest.approx(pipeline[0].score, abs=1e-6)
        assert 0 < predicted[0]["score"] < 1
