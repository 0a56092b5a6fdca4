"""`/embed_all` and MaxSim rerank/score over HTTP, through the shared pipeline: token vectors of
an embedder and of a ColBERT equal the library's, base64 decodes to the same matrices, the
tokens x dimensions limit answers 413 before inference, and rerank/score on a ColBERT are MaxSim,
the query held to the same token limits and `truncate` as the documents, `max_tokens_per_doc`
honoured and `instruction` refused."""

from __future__ import annotations

import base64
import warnings

import httpx
import numpy as np
import pytest
from embedserve.inputs import Inputs
from embedserve.late_interaction import ColBERT
from embedserve.server.config import Limits, ModelSpec

from ..support.cross_encoders import QUERIES
from .conftest import MODEL, live_server, unhurried

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pylate  # noqa: F401 - builds the tiny ColBERT (tests/support/colbert.py)

DOCS = ["the warranty is void.", "you may link against the library", "fees, copies; source!"]
# The `limited` server's token limits; "word " * n is n + 3 tokens to the tiny ColBERT ([CLS],
# the [Q] or [D] marker, [SEP]), and its queries are cut at 32 tokens, its documents at 64.
MAX_INPUT_TOKENS = 50
MAX_REQUEST_TOKENS = 120


@pytest.fixture(scope="module")
def colbert(tmp_path_factory, minilm_dir) -> ColBERT:
    from ..support.colbert import build_colbert

    folder = build_colbert(tmp_path_factory.mktemp("colbert-http"), minilm_dir)
    return ColBERT.from_pretrained(folder, name="colbert")


@pytest.fixture(scope="module")
def served(minilm_dir, engine, colbert):
    folder = colbert.config.directory
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


def tei_ids(live, texts, **options) -> list[list[int]]:
    tokens = httpx.post(live.url + "/tokenize", json={"inputs": texts, **options}).json()
    return [[token["id"] for token in sequence] for sequence in tokens]


def test_embed_all_takes_token_ids_as_tei_s_embed_does(served):
    """TEI's /embed_all takes /embed's `inputs` union (router/src/http/types.rs:
    `EmbedAllRequest.inputs: Input`, compared at
    huggingface/text-embeddings-inference@0d124dc9773be6ac5a9a57d8439aba9bbbf33273): an
    embedder's vectors of ids from /tokenize are its text's, special tokens sent or not. A
    ColBERT refuses ids by name: PyLate encodes texts only, its tokenizer marking each as a
    query or a document, so no id array is what it would compute."""
    live, _, _ = served
    texts = ["hello world", "a b c"]
    want = httpx.post(live.url + "/embed_all", json={"inputs": texts}).json()
    sequences = tei_ids(live, texts)
    got = httpx.post(live.url + "/embed_all", json={"inputs": sequences})
    assert got.status_code == 200, got.text
    for a, b in zip(got.json(), want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    content = tei_ids(live, texts[1], add_special_tokens=False)[0]
    for inputs in (sequences[1], content):  # one array: one input
        (one,) = httpx.post(live.url + "/embed_all", json={"inputs": inputs}).json()
        np.testing.assert_allclose(one, want[1], atol=1e-6)
    # Texts and id arrays in one array (TEI's InputType: String or Ids), each its own.
    for mixed in ([texts[0], sequences[1]], [sequences[0], texts[1]]):
        got = httpx.post(live.url + "/embed_all", json={"inputs": mixed})
        assert got.status_code == 200, got.text
        for a, b in zip(got.json(), want, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
    mixed = {"inputs": [texts[0], sequences[1]], "model": "colbert", "is_query": True}
    refused = httpx.post(live.url + "/embed_all", json=mixed)
    assert refused.status_code == 422 and "token ids are an embedder's" in refused.text
    body = {"inputs": sequences, "model": "colbert", "is_query": True}
    refused = httpx.post(live.url + "/embed_all", json=body)
    assert refused.status_code == 422
    assert refused.json() == {
        "error": "inputs as token ids are an embedder's; colbert is a ColBERT, which marks each "
        "text as a query or a document when it tokenizes it: send texts",
        "error_type": "Validation",
    }


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ([[101, 7592, 102], [101, 30522]], "inputs[1] holds token id 30522"),
        ([[101], [-1]], "inputs[1] holds token id -1"),
        ([[101], []], "inputs[1] is an empty token array"),
        ([[7592] * 8193], "inputs[0] has 8193 tokens"),
        (["hello", 7592], "inputs[1] is a token id and inputs[0] a text"),
        (["hello", [101, 30522]], "inputs[1] holds token id 30522"),
        ([[7592], ""], "inputs[1] is an empty string"),
        ([[7592] * 400_000], "inputs holds at least"),  # refused before decoding
    ],
)
def test_embed_all_refuses_bad_token_ids_in_tei_s_shape(served, inputs, words):
    live, _, _ = served
    response = httpx.post(live.url + "/embed_all", json={"inputs": inputs}, timeout=60)
    error = response.json()
    want = (400, "Empty") if "empty" in words else (422, "Validation")  # TEI's statuses
    assert (response.status_code, error["error_type"]) == want, response.text
    assert set(error) == {"error", "error_type"}
    assert error["error"].startswith(words), error


def test_embed_all_takes_tei_s_truncation_direction_and_prompt_name(minilm_dir, engine, colbert):
    """An embedder's tokens cut from the left, as TEI's /embed_all does with
    `truncation_direction`; `prompt_name` as /embed takes it. A ColBERT refuses both. (Its own
    server: `served`'s --max-token-values is less than one whole input of the embedder.)"""
    folder = colbert.config.directory
    config = unhurried(
        models=(ModelSpec(str(minilm_dir), MODEL), ModelSpec(str(folder), "colbert"))
    )
    with live_server(config, engines={MODEL: engine, "colbert": colbert}) as live:
        check_embed_all_options(live, engine)


def check_embed_all_options(live, engine) -> None:
    text = "word " * 300 + "end"
    body = {"inputs": [text], "truncation_direction": "Left", "prompt_name": "query"}
    response = httpx.post(live.url + "/embed_all", json=body, timeout=60)
    assert response.status_code == 200, response.text
    (want,) = (
        engine.prepare(Inputs(texts=[text]), truncation_direction="left").keeping_states().sequences
    )
    engine.forward([want])
    np.testing.assert_allclose(np.asarray(response.json()[0], np.float32), want.states, atol=1e-5)
    right = httpx.post(live.url + "/embed_all", json={"inputs": [text]}, timeout=60).json()
    assert not np.allclose(right[0], want.states, atol=1e-3)
    for field, value in (("truncation_direction", "left"), ("prompt_name", "query")):
        body = {"inputs": ["a"], "model": "colbert", field: value}
        refused = httpx.post(live.url + "/embed_all", json=body, timeout=60)
        assert refused.status_code == 422
        assert refused.json()["error"].startswith(f"{field} is an embedder's; colbert is a ColBERT")


def test_embed_all_refuses_a_response_past_the_limit_before_inference(served):
    live, _, _ = served
    response = httpx.post(live.url + "/embed_all", json={"inputs": ["word " * 60]})
    assert response.status_code == 413, response.text
    assert response.json()["error_type"] == "Validation"
    assert "max-token-values" in response.json()["error"]
    bad = httpx.post(live.url + "/embed_all", json={"inputs": [""]})
    assert bad.status_code == 400 and bad.json()["error_type"] == "Empty"
    wrong = httpx.post(live.url + "/v1/embeddings", json={"input": "a", "model": "colbert"})
    assert wrong.status_code == 400 and "late-interaction" in wrong.text


def test_embed_all_names_an_over_long_input_by_the_route_s_field(served):
    """With truncate: false, an input past the model's limit is `inputs[i]`, its index in the
    request, in the first tokenizing step as in a later one (70,000 characters fill the first:
    one [UNK] word), for an embedder and for a ColBERT."""
    live, _, _ = served
    for model, tokens, limit in ((MODEL, 602, 256), ("colbert", 603, 64)):
        for inputs, where in (
            (["ok", "word " * 600], "inputs[1]"),
            (["a" * 70_000, "ok", "word " * 600], "inputs[2]"),
        ):
            body = {"model": model, "inputs": inputs, "truncate": False}
            response = httpx.post(live.url + "/embed_all", json=body, timeout=60)
            assert response.status_code == 422, response.text
            assert response.json() == {
                "error": f"{where} has {tokens} tokens, more than the model's limit of {limit}; "
                "shorten it or allow truncation",
                "error_type": "Validation",
            }


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


@pytest.fixture(scope="module")
def limited(colbert):
    """The ColBERT alone, under token limits a test's texts can reach."""
    limits = Limits(max_input_tokens=MAX_INPUT_TOKENS, max_request_tokens=MAX_REQUEST_TOKENS)
    config = unhurried(models=(ModelSpec(str(colbert.config.directory), "colbert"),), limits=limits)
    with live_server(config, engines={"colbert": colbert}) as live:
        yield live


def test_a_maxsim_query_past_the_model_s_limit_with_truncate_false_is_refused(limited):
    """As a document past `document_length` is: 400 naming the request's query field."""
    query = "word " * 40  # 43 tokens: past the query length (32), within the server's 50
    rerank = {"model": "colbert", "query": query, "documents": ["a b"], "truncate": False}
    response = httpx.post(limited.url + "/v1/rerank", json=rerank)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "message": "query has 43 tokens, more than the model's limit of 32; shorten it or allow "
        "truncation"
    }
    tei = httpx.post(
        limited.url + "/rerank", json={"query": query, "texts": ["a b"], "truncate": False}
    )
    assert tei.status_code == 422 and tei.json()["error"].startswith("query has 43 tokens")
    score = {"model": "colbert", "text_1": query, "text_2": ["a b"], "truncate": False}
    error = httpx.post(limited.url + "/v1/score", json=score).json()["error"]
    assert error["param"] == "text_1" and error["code"] == "context_length_exceeded"
    assert error["message"].startswith("text_1 has 43 tokens, more than the model's limit of 32")
    # The same query cut at the query length when truncation is on, as before.
    assert httpx.post(limited.url + "/v1/rerank", json={**rerank, "truncate": True}).is_success
    # A document past its limit names the request's field too, not the model's `input`.
    documents = {"text_1": "q", "text_2": ["a", "word " * 70]}  # 73 tokens, past 64
    error = httpx.post(limited.url + "/v1/score", json={**score, **documents}).json()["error"]
    assert error["param"] == "text_2" and error["code"] == "context_length_exceeded"
    assert error["message"].startswith("text_2[1] has 73 tokens, more than the model's limit of 64")


def test_a_maxsim_query_counts_toward_the_request_s_token_limits(limited):
    """Each input within --max-input-tokens even when truncation is on, the query included, and
    the query counted once in the request's --max-request-tokens."""
    long = "word " * 60  # 63 tokens, past the server's 50
    for route, body, param in [
        ("/v1/rerank", {"model": "colbert", "query": long, "documents": ["a b"]}, "query"),
        ("/v1/score", {"model": "colbert", "text_1": long, "text_2": ["a b"]}, "text_1"),
    ]:
        response = httpx.post(limited.url + route, json=body)
        assert response.status_code == 400, response.text
        message = response.json().get("message") or response.json()["error"]["message"]
        assert message == (
            f"{param} has 63 tokens; at most {MAX_INPUT_TOKENS} are allowed per input, even when "
            "truncation is on"
        )
    # 47 + 2 x 43 = 133 tokens: the documents alone (86) are within the request's 120.
    query, documents = "word " * 44, ["word " * 40] * 2
    body = {"model": "colbert", "query": query, "documents": documents}
    score = {"model": "colbert", "text_1": query, "text_2": documents}
    response = httpx.post(limited.url + "/v1/score", json=score)
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "text_2"
    assert error["message"] == (
        f"text_1 and the first 2 text_2 already hold 133 tokens; at most {MAX_REQUEST_TOKENS} "
        "are allowed per request"
    )
    response = httpx.post(limited.url + "/v1/rerank", json=body)
    assert response.status_code == 400 and response.json()["message"] == (
        f"query and the first 2 documents already hold 133 tokens; at most "
        f"{MAX_REQUEST_TOKENS} are allowed per request"
    )
    within = {**body, "documents": documents[:1]}
    assert httpx.post(limited.url + "/v1/rerank", json=within).is_success


def test_maxsim_rerank_cuts_each_document_at_max_tokens_per_doc(limited, colbert):
    """Cohere's max_tokens_per_doc: each document's first N tokens are scored (the markers and
    special tokens around them not counted), before the model's own limit."""
    body = {"model": "colbert", "query": QUERIES[1], "documents": DOCS, "max_tokens_per_doc": 3}
    got = httpx.post(limited.url + "/v2/rerank", json=body).json()
    cut = ["the warranty", "you may link", "fees, copies"]  # 3 tokens each: warrant ##y
    expected = colbert.score(QUERIES[1], cut)
    assert [r["index"] for r in got["results"]] == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose(
        [r["relevance_score"] for r in got["results"]], np.sort(expected)[::-1], rtol=1e-5
    )
    # The query's 32 tokens (expanded) and each document's 3 with [CLS], [D] and [SEP].
    assert got["usage"]["total_tokens"] == 32 + 3 * 6
    # A document past the model's 64 tokens, cut to 10 first, passes even with truncate false.
    long = {**body, "documents": ["word " * 70], "max_tokens_per_doc": 10, "truncate": False}
    assert httpx.post(limited.url + "/v1/rerank", json=long).status_code == 200


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/rerank", {"model": "colbert", "query": "q", "documents": ["a b"]}),
        ("/rerank", {"query": "q", "texts": ["a b"]}),
        ("/v1/score", {"model": "colbert", "text_1": "q", "text_2": ["a b"]}),
    ],
)
def test_maxsim_refuses_an_instruction(limited, route, body):
    """A ColBERT reads no instruction (only an LLM reranker's prompt does): 400, not ignored."""
    response = httpx.post(limited.url + route, json={**body, "instruction": "judge relevance"})
    assert response.status_code == (422 if route == "/rerank" else 400), response.text
    answer = response.json()
    message = answer.get("message") or answer.get("error")
    if route == "/v1/score":
        assert answer["error"]["param"] == "instruction"
        assert answer["error"]["code"] == "unsupported_parameter"
        message = answer["error"]["message"]
    assert "takes no instruction" in message and "late-interaction" in message
