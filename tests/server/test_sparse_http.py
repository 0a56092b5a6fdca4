"""TEI's /embed_sparse on a real server: the library's vectors, pruning and decoded tokens, and
bad input answered 400 in TEI's shape (a server without a sparse model too), never a 500."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from embedserve.server.config import ModelSpec
from embedserve.sparse import SparseEncoder

from .conftest import MODEL, live_server, unhurried

SPLADE = "splade"
TEXTS = ["Sparse retrieval with lexical expansion", "hello", "a <mask> between words"]


@pytest.fixture(scope="module")
def encoder(splade_dir) -> SparseEncoder:
    return SparseEncoder.from_pretrained(splade_dir, name=SPLADE)


@pytest.fixture(scope="module")
def both(engine, encoder, splade_dir):
    config = unhurried(models=(ModelSpec(MODEL), ModelSpec(str(splade_dir), SPLADE)))
    with live_server(config, engines={MODEL: engine, SPLADE: encoder}) as server:
        yield server


def post(server, body: object) -> httpx.Response:
    return httpx.post(server.url + "/embed_sparse", json=body, timeout=60)


def test_vectors_are_the_library_s(both, encoder):
    response = post(both, {"inputs": TEXTS})
    assert response.status_code == 200, response.text
    want = encoder.encode(TEXTS)
    got = response.json()
    assert [{p["index"]: p["value"] for p in row} for row in got] == [w.to_dict() for w in want]
    assert all(set(p) == {"index", "value"} for row in got for p in row)
    single = post(both, {"inputs": TEXTS[0]}).json()
    assert single == got[:1]


def test_pruning_and_tokens(both, encoder):
    body = {"inputs": TEXTS, "top_k": 3, "threshold": 0.5, "return_tokens": True}
    got = post(both, body).json()
    want = encoder.encode(TEXTS, top_k=3, threshold=0.5)
    for row, vector in zip(got, want, strict=True):
        assert [p["index"] for p in row] == vector.indices.tolist()
        assert [p["token"] for p in row] == encoder.tokens(vector)
        assert len(row) <= 3 and all(p["value"] > 0.5 for p in row)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"inputs": []}, "must not be an empty array"),
        ({"inputs": ["ok", ""]}, "inputs[1] is an empty string"),
        ({"inputs": "x", "top_k": 0}, "top_k"),
        ({"inputs": "x", "threshold": -1}, "threshold"),
        ({"inputs": "x", "pooling": "splade"}, "pooling"),
        ({"inputs": "x", "prompt_name": "nope"}, "prompt_name 'nope'"),
        ({"inputs": "word " * 600, "truncate": False}, "inputs[0] has 602 tokens"),
        ({"inputs": ["ok", "word " * 600], "truncate": False}, "inputs[1] has 602 tokens"),
    ],
)
def test_bad_input_gets_tei_s_status(both, body, words):
    """TEI's statuses (tests/server/test_adapters.py TEI_STATUSES): 400 Empty, else 422."""
    response = post(both, body)
    error = response.json()
    empty = "empty" in words
    want = (400, "Empty") if empty else (422, "Validation")
    assert (response.status_code, error["error_type"]) == want, response.text
    assert set(error) == {"error", "error_type"}
    assert words in error["error"]


def tei_ids(server, texts, **options) -> list[list[int]]:
    """The ids /tokenize gives (the served embedder's vocabulary, the SPLADE's too: asserted)."""
    tokens = httpx.post(server.url + "/tokenize", json={"inputs": texts, **options}).json()
    return [[token["id"] for token in sequence] for sequence in tokens]


def assert_same_sparse(got: list, want: list) -> None:
    assert [[p["index"] for p in row] for row in got] == [[p["index"] for p in row] for row in want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose([p["value"] for p in a], [p["value"] for p in b], rtol=1e-5)


def test_token_ids_answer_as_their_text(both, encoder):
    """TEI's /embed_sparse takes /embed's `inputs` union: a text, texts, one id array (one input)
    or id arrays (router/src/http/types.rs: `EmbedSparseRequest.inputs: Input`, compared at
    huggingface/text-embeddings-inference@0d124dc9773be6ac5a9a57d8439aba9bbbf33273). Ids as
    /tokenize gives them answer as their text, special tokens sent or not, cut alike."""
    texts = [*TEXTS, "word " * 600 + "end"]
    sequences = tei_ids(both, texts)
    tokenizer = encoder.tokenizer  # the same vocabulary
    assert sequences[0] == [
        *tokenizer.prefix,
        *tokenizer.content_ids(texts[:1])[0],
        *tokenizer.suffix,
    ]
    want = post(both, {"inputs": texts}).json()
    many = post(both, {"inputs": sequences})
    assert many.status_code == 200, many.text
    assert_same_sparse(many.json(), want)
    content = tei_ids(both, texts[1], add_special_tokens=False)[0]
    for inputs in (sequences[1], content):  # one array: one input
        assert_same_sparse(post(both, {"inputs": inputs}).json(), want[1:2])
    # Texts and id arrays in one array (TEI's InputType: String or Ids), each its own.
    mixed = post(both, {"inputs": [texts[0], sequences[1], texts[2], sequences[3]]})
    assert mixed.status_code == 200, mixed.text
    assert_same_sparse(mixed.json(), want)
    left = post(both, {"inputs": [sequences[3]], "truncation_direction": "left"}).json()
    assert_same_sparse(
        left, post(both, {"inputs": [texts[3]], "truncation_direction": "left"}).json()
    )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"inputs": [[101, 7592, 102], [101, 30522]]}, "inputs[1] holds token id 30522"),
        ({"inputs": [[101], [-1]]}, "inputs[1] holds token id -1"),
        ({"inputs": [[101], []]}, "inputs[1] is an empty token array"),
        ({"inputs": [[7592] * 600], "truncate": False}, "inputs[0] has 602 tokens"),
        ({"inputs": [[7592] * 8193]}, "inputs[0] has 8193 tokens"),
        ({"inputs": ["hello", 7592]}, "inputs[1] is a token id and inputs[0] a text"),
        ({"inputs": ["hello", [101, 30522]]}, "inputs[1] holds token id 30522"),
        ({"inputs": ["hello", []]}, "inputs[1] is an empty token array"),
        ({"inputs": [[7592], ""]}, "inputs[1] is an empty string"),
        ({"inputs": [[7592] * 400_000]}, "inputs holds at least"),  # refused before decoding
    ],
)
def test_bad_token_ids_get_tei_s_status(both, body, words):
    response = post(both, body)
    error = response.json()
    want = (400, "Empty") if "empty" in words else (422, "Validation")
    assert (response.status_code, error["error_type"]) == want, response.text
    assert set(error) == {"error", "error_type"}
    assert error["error"].startswith(words), error


def test_a_server_without_a_sparse_model_says_so(server):
    response = httpx.post(
        server.url + "/embed_sparse",
        json={"inputs": "x"},
        headers={"Authorization": "Bearer sk-test-key"},
    )
    # TEI answers embed_sparse on a model that is not SPLADE with a Backend error, 424.
    assert response.status_code == 424, response.text
    assert response.json() == {
        "error": f"The model `{MODEL}` is an embedding model, not a sparse encoder; use it with "
        "/v1/embeddings, or name a sparse model",
        "error_type": "Backend",
    }


class CountingEncoder:
    """A real sparse encoder that counts the batches its model runs."""

    kind = "sparse"

    def __init__(self, encoder: SparseEncoder) -> None:
        self._encoder = encoder
        self.batches = 0

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def forward(self, sequences):
        self.batches += 1
        return self._encoder.forward(sequences)


def test_inference_free_queries_run_no_model(tmp_path, splade_dir):
    from ..support.splade import inference_free

    folder = inference_free(tmp_path / "inference-free", splade_dir)
    encoder = CountingEncoder(SparseEncoder.from_pretrained(folder, name=SPLADE))
    config = unhurried(models=(ModelSpec(str(folder), SPLADE),))
    with live_server(config, engines={SPLADE: encoder}) as server:
        queries = post(server, {"inputs": TEXTS, "input_type": "query"})
        assert queries.status_code == 200, queries.text
        assert encoder.batches == 0
        want = encoder.encode(TEXTS, input_type="query")
        assert [{p["index"]: p["value"] for p in row} for row in queries.json()] == [
            w.to_dict() for w in want
        ]
        documents = post(server, {"inputs": TEXTS, "input_type": "document"}).json()
        assert encoder.batches >= 1
        assert [{p["index"]: p["value"] for p in row} for row in documents] == [
            w.to_dict() for w in encoder.encode(TEXTS)
        ]
        long = post(
            server, {"inputs": ["ok", "word " * 600], "input_type": "query", "truncate": False}
        )
        assert long.status_code == 422 and long.json()["error_type"] == "Validation"
        assert "inputs[1] has 600 tokens" in long.json()["error"]
        ids = post(server, {"inputs": [[101, 7592, 102]], "input_type": "query"})
        assert ids.status_code == 422 and ids.json()["error_type"] == "Validation"
        assert "inference-free: its queries" in ids.json()["error"]
        mixed = post(server, {"inputs": ["a", [101, 7592, 102]], "input_type": "query"})
        assert mixed.status_code == 422 and "inference-free: its queries" in mixed.text


def test_a_sparse_only_server_describes_itself_and_refuses_dense(encoder, splade_dir):
    config = unhurried(models=(ModelSpec(str(splade_dir), SPLADE),))
    with live_server(config, engines={SPLADE: encoder}) as server:
        info = httpx.get(server.url + "/info", timeout=30).json()
        assert info["model_type"] == {"embedding": {"pooling": "splade"}}
        assert info["max_input_length"] == 512
        dense = httpx.post(server.url + "/embed", json={"inputs": "x"}, timeout=30)
        assert dense.status_code == 424
        assert dense.json() == {
            "error": f"The model `{SPLADE}` is a sparse encoder, not an embedding model; use it "
            "with /embed_sparse, or name an embedder model",
            "error_type": "Backend",
        }
        assert post(server, {"inputs": "x"}).status_code == 200


def test_a_response_over_the_pair_limit_is_refused(both, encoder, monkeypatch):
    from embedserve.server import limits

    pairs = sum(len(v) for v in encoder.encode(TEXTS))
    monkeypatch.setattr(limits, "MAX_SPARSE_PAIRS", pairs - 1)
    response = post(both, {"inputs": TEXTS})
    assert response.status_code == 422  # TEI's status for a request over a limit
    assert f"hold {pairs} (index, value) pairs" in response.json()["error"]
    assert post(both, {"inputs": TEXTS, "top_k": 2}).status_code == 200


def test_a_saved_max_active_dims_is_the_default_top_k(tmp_path, splade_dir):
    from ..support.splade import with_st_config

    folder = with_st_config(splade_dir, tmp_path / "k4", max_active_dims=4)
    encoder = SparseEncoder.from_pretrained(folder, name=SPLADE)
    config = unhurried(models=(ModelSpec(str(folder), SPLADE),))
    with live_server(config, engines={SPLADE: encoder}) as server:
        for body, most in (({}, 4), ({"top_k": 2}, 2), ({"top_k": 12}, 12)):
            got = post(server, {"inputs": TEXTS, **body}).json()
            want = encoder.encode(TEXTS, top_k=body.get("top_k"))
            assert [{p["index"]: p["value"] for p in row} for row in got] == [
                w.to_dict() for w in want
            ]
            assert max(len(row) for row in got) == most


def test_input_types_take_the_model_s_query_and_document_prompts(tmp_path, splade_dir):
    from ..support.splade import with_st_config

    prompts = {"query": "query: ", "passage": "passage: ", "other": "other: "}
    folder = with_st_config(
        splade_dir, tmp_path / "prompts", prompts=prompts, default_prompt_name="other"
    )
    encoder = SparseEncoder.from_pretrained(folder, name=SPLADE)
    config = unhurried(models=(ModelSpec(str(folder), SPLADE),))
    with live_server(config, engines={SPLADE: encoder}) as server:
        answers = {}
        for input_type in (None, "query", "document"):
            body = (
                {"inputs": TEXTS}
                if input_type is None
                else {"inputs": TEXTS, "input_type": input_type}
            )
            got = post(server, body).json()
            answers[input_type] = [{p["index"]: p["value"] for p in row} for row in got]
            want = encoder.encode(TEXTS, input_type=input_type)
            assert answers[input_type] == [w.to_dict() for w in want]
        assert len({str(a) for a in answers.values()}) == 3  # three prompts, three answers
