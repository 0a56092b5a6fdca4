"""TEI, Ollama and Cohere wire formats over real HTTP: shapes, options and error bodies. (The
real client SDKs are in test_clients.py.)"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from embedserve.engine import ModelInfo
from embedserve.quantization import BYTE_ENCODINGS
from embedserve.server.adapters.cohere import prompt_for
from embedserve.server.config import Limits

from tests.server.conftest import KEY, MODEL, LiveServer, auth, live_server, unhurried
from tests.support import cosines

LONG = "word " * 400  # past the model's 256 tokens


@pytest.fixture(scope="module")
def server(engine) -> Iterator[LiveServer]:
    with live_server(unhurried(api_keys=(KEY,)), engines={MODEL: engine}) as live:
        yield live


def post(server: LiveServer, path: str, body, key: str = KEY) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=auth(key), timeout=60)


def test_tei_embed_options_match_the_engine(server, engine):
    texts = ["hello world", LONG]
    for path in ("/embed", "/"):
        got = np.asarray(post(server, path, {"inputs": texts}).json(), np.float32)
        assert cosines(got, engine.embed(texts).embeddings).min() >= 0.99999
    raw = post(server, "/embed", {"inputs": "hello", "normalize": False}).json()
    want = engine.embed(["hello"], normalize=False).embeddings
    np.testing.assert_allclose(raw, want, rtol=1e-4, atol=1e-5)
    # huggingface_hub's `parameters` wrapper; TEI's capitalized direction.
    left = post(
        server, "/", {"inputs": LONG + "end", "parameters": {"truncation_direction": "Left"}}
    )
    want = engine.embed([LONG + "end"], truncation_direction="left").embeddings
    assert cosines(np.asarray(left.json(), np.float32), want).min() >= 0.99999


def test_tei_errors_have_tei_shape(server):
    response = post(server, "/embed", {"inputs": "a", "truncate": False, "normalize": "yes"})
    assert response.status_code == 422  # TEI's statuses: TEI_STATUSES below
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == "Validation"
    assert "$.normalize" in body["error"]
    too_long = post(server, "/embed", {"inputs": ["a", LONG], "truncate": False})
    assert too_long.status_code == 422 and too_long.json()["error"].startswith("inputs[1] has")
    assert post(server, "/embed", {"inputs": "a"}, key="wrong").json()["error_type"] == "Validation"
    assert post(server, "/embed", {"inputs": "a", "dimensions": 8}).status_code == 422


# What TEI answers for each mistake: its ErrorType's status (router/src/http/server.rs,
# `From<&ErrorType> for StatusCode`: Empty 400, Validation 422, Backend 424) and axum 0.7's
# for a body its Json extractor refuses (JsonSyntaxError 400, JsonDataError 422), read in
# huggingface/text-embeddings-inference at 0d124dc9773be6ac5a9a57d8439aba9bbbf33273 and
# tokio-rs/axum axum-v0.7.9 (9983bc1da460becd3a0f08c513d610411e84dd43), axum/src/json.rs.
TEI_STATUSES = [
    ("/embed", b'{"inputs": ["a", "LONG"], "truncate": false}', 422, "Validation"),
    ("/embed", b'{"inputs": ""}', 400, "Empty"),
    ("/embed", b'{"inputs": []}', 400, "Empty"),
    ("/embed", b'{"inputs": ["a", ""]}', 400, "Empty"),
    ("/embed", b'{"inputs": [[]]}', 400, "Empty"),
    ("/", b'{"inputs": ', 400, "Validation"),  # no JSON: axum's text body, our error type
    ("/embed", b"", 400, "Validation"),
    ("/embed", b'{"inputs": "a", "normalize": "yes"}', 422, "Validation"),
    ("/embed", b'{"normalize": true}', 422, "Validation"),
    ("/embed", b"[1]", 422, "Validation"),
    ("/embed", b'{"inputs": "a", "dimensions": 0}', 422, "Validation"),
    ("/embed", b'{"inputs": "a", "prompt_name": "nope"}', 422, "Validation"),
    ("/similarity", b'{"inputs": {"source_sentence": "", "sentences": ["a"]}}', 400, "Empty"),
    ("/similarity", b'{"inputs": {"source_sentence": "a", "sentences": []}}', 400, "Empty"),
    ("/tokenize", b'{"inputs": []}', 400, "Empty"),
    ("/embed_sparse", b'{"inputs": "a"}', 424, "Backend"),  # not SPLADE
    ("/rerank", b'{"query": "a", "texts": ["b"]}', 424, "Backend"),  # no reranker
    ("/predict", b'{"inputs": "a"}', 424, "Backend"),  # no classifier
]


@pytest.mark.parametrize(("path", "body", "status", "error_type"), TEI_STATUSES)
def test_tei_routes_answer_tei_s_status_for_each_mistake(server, path, body, status, error_type):
    """A TEI client sees the status TEI gives the same mistake (we answered 400 to each)."""
    body = body.replace(b"LONG", LONG.encode())
    response = httpx.post(
        server.url + path,
        content=body,
        headers={**auth(), "Content-Type": "application/json"},
        timeout=60,
    )
    assert (response.status_code, response.json()["error_type"]) == (status, error_type), (
        response.text
    )


def test_tei_batch_too_large_is_validation_422(engine):
    with live_server(
        unhurried(api_keys=(KEY,), limits=Limits(max_inputs=2)), engines={MODEL: engine}
    ) as small:
        response = post(small, "/embed", {"inputs": ["a", "b", "c"]})
        assert response.status_code == 422, response.text
        assert response.json() == {
            "error": "inputs has 3 items; at most 2 are allowed per request",
            "error_type": "Validation",
        }


def tei_ids(server: LiveServer, texts, **options) -> list[list[int]]:
    tokens = post(server, "/tokenize", {"inputs": texts, **options}).json()
    return [[token["id"] for token in sequence] for sequence in tokens]


def test_tei_embed_takes_token_ids_as_its_tokenize_gives_them(server, engine):
    """TEI's `inputs` may be ids of the model's vocabulary (whatever --token-encoding says: this
    server reads OpenAI's arrays as cl100k_base), special tokens included or not."""
    texts = ["hello world", "the quick brown fox", LONG + "end"]
    want = engine.embed(texts).embeddings
    sequences = tei_ids(server, texts)
    assert sequences[0][0] == 101 and sequences[0][-1] == 102  # [CLS] ... [SEP]
    many = post(server, "/embed", {"inputs": sequences})
    assert many.status_code == 200, many.text
    assert cosines(np.asarray(many.json(), np.float32), want).min() >= 0.99999
    content = tei_ids(server, texts[1], add_special_tokens=False)[0]
    for body in ({"inputs": sequences[1]}, {"inputs": content}):  # one array: one input
        one = post(server, "/", body)
        assert cosines(np.asarray(one.json(), np.float32), want[1:2]).min() >= 0.99999
    left = post(server, "/embed", {"inputs": [sequences[2]], "truncation_direction": "left"})
    want = engine.embed(texts[2:], truncation_direction="left").embeddings
    assert cosines(np.asarray(left.json(), np.float32), want).min() >= 0.99999


def test_tei_embed_takes_texts_and_token_ids_mixed(server, engine):
    """TEI's `inputs` is an untagged `Input::Batch(Vec<InputType>)`, InputType a String or a
    Vec<u32> (router/src/http/types.rs, huggingface/text-embeddings-inference at
    0d124dc9773be6ac5a9a57d8439aba9bbbf33273), so one array may hold texts and id arrays: each
    input gets its own vector, in order, texts tokenized as texts and ids read as ids."""
    texts = ["hello world", "the quick brown fox", LONG + "end", "a b c"]
    want = engine.embed(texts).embeddings
    sequences = tei_ids(server, texts)
    content = tei_ids(server, texts[3], add_special_tokens=False)[0]
    for path in ("/embed", "/"):
        mixed = [texts[0], sequences[1], sequences[2], content]
        response = post(server, path, {"inputs": mixed})
        assert response.status_code == 200, response.text
        got = np.asarray(response.json(), np.float32)
        assert got.shape == want.shape
        assert cosines(got, want).min() >= 0.99999
    flipped = post(server, "/embed", {"inputs": [sequences[0], texts[1], sequences[2], texts[3]]})
    assert cosines(np.asarray(flipped.json(), np.float32), want).min() >= 0.99999
    left = post(server, "/embed", {"inputs": ["a", sequences[2]], "truncation_direction": "left"})
    want_left = engine.embed(["a", texts[2]], truncation_direction="left").embeddings
    assert cosines(np.asarray(left.json(), np.float32), want_left).min() >= 0.99999


def test_tei_token_ids_get_the_checks_of_openai_token_arrays(server):
    def refused(inputs, **options) -> str:
        response = post(server, "/embed", {"inputs": inputs, **options})
        body = response.json()
        assert set(body) == {"error", "error_type"}
        empty = "empty" in body["error"]  # TEI's statuses: 400 Empty, else 422 Validation
        want = (400, "Empty") if empty else (422, "Validation")
        assert (response.status_code, body["error_type"]) == want, response.text
        return body["error"]

    assert refused([[101, 7592, 102], [101, 30522]]).startswith("inputs[1] holds token id 30522")
    assert refused([[101], [-1]]).startswith("inputs[1] holds token id -1")
    assert refused([[101], []]).startswith("inputs[1] is an empty token array")
    assert refused([[7592] * 300], truncate=False).startswith("inputs[0] has 302 tokens")
    assert refused([[7592] * 8193]).startswith("inputs[0] has 8193 tokens")
    assert refused(["hello", 7592]).startswith("inputs[1] is a token id and inputs[0] a text")
    assert refused([[7592], "hello", 7592]).startswith("inputs[1] is a text and inputs[0] an")
    # A mixed batch (test_tei_embed_takes_texts_and_token_ids_mixed) gets the same checks,
    # each input named by its index in the batch.
    assert refused(["hello", "world", [101, 30522]]).startswith("inputs[2] holds token id 30522")
    assert refused(["hello", []]).startswith("inputs[1] is an empty token array")
    assert refused([[7592], ""]).startswith("inputs[1] is an empty string")
    assert refused(["a", [7592] * 300], truncate=False).startswith("inputs[1] has 302 tokens")
    assert refused([[7592], "a", LONG], truncate=False).startswith("inputs[2] has 402 tokens")
    assert refused(["a", [7592] * 8193]).startswith("inputs[1] has 8193 tokens")
    assert "$.inputs[0]" in refused([1.5])
    # Millions of ids are refused from the body's bytes, before decoding.
    assert refused([[7592] * 400_000]).startswith("inputs holds at least")


def test_tei_tokenize_takes_prompt_name_as_embed_does(tmp_path, minilm_dir):
    """TEI tokenizes behind the prompt (the model's default if none is named), and its tokens'
    text and offsets are the prompted text's."""
    from embedserve.engine import Engine

    from tests.support.splade import with_st_config

    prompts = {"query": "query: ", "passage": "passage: "}
    folder = with_st_config(
        minilm_dir, tmp_path / "prompts", prompts=prompts, default_prompt_name="passage"
    )
    engine = Engine.from_pretrained(folder, name=MODEL)
    with live_server(unhurried(api_keys=(KEY,)), engines={MODEL: engine}) as prompted:
        query = post(prompted, "/tokenize", {"inputs": ["hello"], "prompt_name": "query"}).json()
        assert [t["text"] for t in query[0]] == ["[CLS]", "query", ":", "hello", "[SEP]"]
        assert (query[0][3]["start"], query[0][3]["stop"]) == (7, 12)
        sequence = engine.prepare(["hello"], prompt_name="query").sequences[0]
        assert [t["id"] for t in query[0]] == sequence.tolist()
        default = post(prompted, "/tokenize", {"inputs": "hello"}).json()
        assert [t["text"] for t in default[0]][1:3] == ["passage", ":"]
        wrong = post(prompted, "/tokenize", {"inputs": "hello", "prompt_name": "nope"})
        assert wrong.status_code == 422 and set(wrong.json()) == {"error", "error_type"}
        assert wrong.json()["error"].startswith("prompt_name 'nope' is not one of")


def test_tei_tokenize_decode_and_info(server, engine):
    tokens = post(server, "/tokenize", {"inputs": ["hello world"]}).json()[0]
    assert [t["id"] for t in tokens] == engine.tokenize(["hello world"])[0]
    assert [t["text"] for t in tokens] == ["[CLS]", "hello", "world", "[SEP]"]
    assert (tokens[0]["special"], tokens[0]["start"]) == (True, None)
    assert (tokens[2]["start"], tokens[2]["stop"]) == (6, 11)
    ids = engine.tokenize(["hello world"])[0]
    assert post(server, "/decode", {"ids": ids}).json() == ["hello world"]
    assert post(server, "/decode", {"ids": [ids, ids[1:2]]}).json() == ["hello world", "hello"]
    bad = post(server, "/decode", {"ids": [ids, [10**9]]})
    assert bad.status_code == 422 and bad.json()["error"].startswith("ids[1]")
    info = httpx.get(server.url + "/info", headers=auth()).json()
    assert info["model_id"] == MODEL and info["max_input_length"] == 256
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["model_dtype"] == "float32"  # the precision the engine runs at
    azure = httpx.get(server.url + "/info?api-version=2024-05-01-preview", headers=auth()).json()
    assert azure == httpx.get(server.url + "/models/info", headers=auth()).json()
    assert azure["model_name"] == MODEL


def test_ollama_routes(server, engine):
    response = post(server, "/api/embed", {"model": MODEL, "input": "hi", "keep_alive": "5m"})
    body = response.json()
    assert set(body) == {
        "model",
        "embeddings",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
    }
    assert body["prompt_eval_count"] == 3
    legacy = post(server, "/api/embeddings", {"model": MODEL + ":latest", "prompt": "hi"}).json()
    got = np.asarray([body["embeddings"][0], legacy["embedding"]], np.float32)
    assert cosines(got, np.repeat(engine.embed(["hi"]).embeddings, 2, 0)).min() >= 0.99999
    missing = post(server, "/api/embed", {"model": "nope", "input": "hi"})
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    assert httpx.get(server.url + "/api/version").json()["version"]
    # As Ollama: a request with no input loads the model and gets no embeddings (test_clients).
    assert post(server, "/api/embeddings", {"model": MODEL, "prompt": ""}).json() == {
        "embedding": []
    }
    blank = post(server, "/api/embed", {"model": MODEL, "input": ["a", ""]})
    assert blank.status_code == 400 and blank.json()["error"].startswith("input[1] is an empty")


def test_ollama_legacy_prompt_is_named_by_its_field(engine):
    """/api/embeddings takes one text, `prompt` (ollama/ollama api/types.go EmbeddingRequest at
    fb30760996871fa9460115c753afd2c60d4ab0f7): its errors name `prompt`, not `prompt[0]`; /api/embed's
    `input` is an array and keeps its indexes."""
    limits = Limits(max_input_tokens=40, max_input_chars=300)
    with live_server(unhurried(api_keys=(KEY,), limits=limits), engines={MODEL: engine}) as small:
        chars = post(small, "/api/embeddings", {"model": MODEL, "prompt": "word " * 70})
        assert chars.status_code == 400, chars.text
        assert chars.json()["error"].startswith("prompt has 350 characters"), chars.text
        tokens = post(small, "/api/embeddings", {"model": MODEL, "prompt": "word " * 45})
        assert tokens.json()["error"].startswith("prompt has 47 tokens; at most 40"), tokens.text
        batch = post(small, "/api/embed", {"model": MODEL, "input": ["a", "word " * 45]})
        assert batch.json()["error"].startswith("input[1] has 47 tokens"), batch.text


def test_cohere_truncate_and_errors(server, engine):
    def cohere(texts, **extra):
        body = {"model": MODEL, "texts": texts, "input_type": "search_document", **extra}
        return post(server, "/v2/embed", body)

    start = cohere([LONG + "end"], truncate="START").json()["embeddings"]["float"]
    want = engine.embed([LONG + "end"], truncation_direction="left").embeddings
    assert cosines(np.asarray(start, np.float32), want).min() >= 0.99999
    refused = cohere(["a", LONG], truncate="NONE")
    assert refused.status_code == 400 and refused.json()["message"].startswith("texts[1] has")
    empty = cohere([]).json()["message"]
    assert empty.startswith("texts must not be an empty array"), empty
    wrong = cohere(["a"], embedding_types=["float16"])
    assert wrong.status_code == 400 and set(wrong.json()) == {"message"}


def test_cohere_max_tokens_cuts_or_refuses_each_text(server, engine):
    """Cohere's `max_tokens` (cohere-python's ClientV2.embed sends it: "The maximum number of
    tokens to embed per input. If the input text is longer than this, it will be truncated
    according to the `truncate` parameter"), counted as the model's limit is, with its special
    tokens: each text cut there from the side `truncate` says, or refused with NONE."""

    def cohere(texts, **extra):
        body = {"model": MODEL, "texts": texts, "input_type": "search_document", **extra}
        return post(server, "/v2/embed", body)

    text = "the quick brown fox jumps over the lazy dog"
    (content,) = tei_ids(server, text, add_special_tokens=False)
    for truncate, kept in (("END", content[:3]), ("START", content[-3:])):
        got = cohere([text, "a"], max_tokens=5, truncate=truncate)
        assert got.status_code == 200, got.text
        want = engine.embed([kept, [1037]]).embeddings  # "a" is one token: left whole
        vectors = np.asarray(got.json()["embeddings"]["float"], np.float32)
        assert cosines(vectors, want).min() >= 0.99999
        assert got.json()["meta"]["billed_units"]["input_tokens"] == 5 + 3
    refused = cohere(["a", text], max_tokens=5, truncate="NONE")
    assert refused.status_code == 400
    assert refused.json() == {
        "message": "texts[1] has 11 tokens, more than max_tokens of 5; shorten it or allow "
        "truncation"
    }
    assert cohere(["a", text], max_tokens=11, truncate="NONE").status_code == 200
    for wrong in (257, 2):
        answer = cohere(["a"], max_tokens=wrong)
        assert answer.status_code == 400
        assert answer.json() == {
            "message": f"max_tokens is {wrong}; {MODEL} takes from 3 to 256 tokens per text "
            "(2 of them its special tokens)"
        }
    zero = cohere(["a"], max_tokens=0)
    assert zero.status_code == 400 and "$.max_tokens" in zero.json()["message"]


def cohere_embed(server: LiveServer, **fields) -> httpx.Response:
    return post(server, "/v2/embed", {"model": MODEL, "input_type": "search_document", **fields})


def text_input(*parts: str) -> dict:
    return {"content": [{"type": "text", "text": part} for part in parts]}


def test_cohere_inputs_embed_as_their_texts_would(server):
    """Cohere's v2 `inputs` (cohere-python 5.21.1's v2/raw_client.py sends `EmbedInput`s, each
    a `content` list of `{"type": "text", "text"}` and `{"type": "image_url", "image_url"}`
    parts): one embedding per input, the same bytes `texts` gives for the same text. Cohere does
    not say how an input's text parts are joined; embedserve joins them with a newline, the
    text the answer's `texts` shows."""
    texts = ["hello world", "the quick brown fox\njumps over", LONG + "end"]
    inputs = [text_input(texts[0]), text_input("the quick brown fox", "jumps over")]
    inputs.append(text_input(texts[2]))
    by_texts = cohere_embed(server, texts=texts, embedding_types=["base64", "int8"]).json()
    by_inputs = cohere_embed(server, inputs=inputs, embedding_types=["base64", "int8"])
    assert by_inputs.status_code == 200, by_inputs.text
    assert by_inputs.json()["embeddings"] == by_texts["embeddings"]
    assert by_inputs.json()["texts"] == texts
    assert by_inputs.json()["meta"] == by_texts["meta"]
    # Errors name the inputs as sent.
    refused = cohere_embed(server, inputs=[text_input("a"), text_input(LONG)], truncate="NONE")
    assert refused.status_code == 400 and refused.json()["message"].startswith("inputs[1] has")
    empty = cohere_embed(server, inputs=[text_input("a"), text_input("")])
    assert empty.json() == {
        "message": "inputs[1] is an empty string; every input must hold at least one token"
    }


def test_cohere_refuses_images_and_field_mixes_in_its_shape(server):
    """A text model asked for images, or for both or neither of `texts` and `inputs`: a 400 in
    Cohere's `{"message"}` shape naming the field, not a parse error about an unknown field."""

    def refused(**fields) -> str:
        response = cohere_embed(server, **fields)
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"message"}
        return response.json()["message"]

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert refused(images=["data:image/png;base64,iVBORw0KGgo="]) == (
        f"images: the model `{MODEL}` embeds text only; send texts, or inputs of text parts"
    )
    assert refused(texts=["a"], input_type="image") == (
        f"input_type `image` is for images; the model `{MODEL}` embeds text only: use "
        "search_document, search_query, classification or clustering"
    )
    assert refused(
        inputs=[text_input("a"), {"content": [{"type": "text", "text": "b"}, image]}]
    ) == (
        f"inputs[1].content[1] is an image_url part; the model `{MODEL}` embeds text only: send "
        "text parts"
    )
    assert refused(texts=["a"], inputs=[text_input("a")]) == ("send texts or inputs, not both")
    assert refused() == (
        'texts or inputs is required: texts as ["..."], or inputs as '
        '[{"content": [{"type": "text", "text": "..."}]}]'
    )
    assert refused(inputs=[text_input("a"), {"content": []}]) == (
        "inputs[1].content is empty; send at least one text part"
    )
    assert "$.inputs[0].content[0].type" in refused(inputs=[{"content": [{"type": "video"}]}])


def test_cohere_output_dimension_and_embedding_types(server, engine):
    """`output_dimension` is checked as OpenAI's `dimensions` is, with errors naming Cohere's
    field; a type named twice in `embedding_types` is answered once."""
    refused = cohere_embed(server, texts=["a"], output_dimension=8)
    assert refused.status_code == 400
    message = refused.json()["message"]
    assert message.startswith(
        f"The model `{MODEL}` does not support the output_dimension parameter"
    ), message
    assert "Leave output_dimension out" in message
    with live_server(unhurried(allow_dimensions=True), engines={MODEL: engine}) as cutting:
        wide = cohere_embed(cutting, texts=["a"], output_dimension=385)
        assert wide.status_code == 400
        assert wide.json() == {"message": "output_dimension must be between 1 and 384, got 385"}
        cut = cohere_embed(
            cutting, texts=["a"], output_dimension=12, embedding_types=["ubinary", "float"]
        ).json()["embeddings"]
    want = engine.embed(["a"], dimensions=12).embeddings
    assert cosines(np.asarray(cut["float"], np.float32), want).min() >= 0.99999
    assert np.asarray(cut["ubinary"]).shape == (1, 2)  # 12 bits, packed as numpy.packbits does
    twice = cohere_embed(server, texts=["a"], embedding_types=["int8", "float", "int8"]).json()
    assert set(twice["embeddings"]) == {"int8", "float"}


def test_tei_s_response_headers_say_what_was_computed(server):
    """TEI's embed routes answer x-compute-time (x-total-time again), x-compute-characters,
    x-compute-tokens and the phases in milliseconds (router/src/lib.rs, `From<ResponseMetadata>
    for HeaderMap`, at huggingface/text-embeddings-inference@0d124dc9773be6ac5a9a57d8439aba9bbbf33273)."""
    texts = ["hello world", "the quick brown fox"]
    answer = post(server, "/embed", {"inputs": texts})
    headers = answer.headers
    assert headers["x-compute-characters"] == str(len(texts[0]) + len(texts[1]))
    assert headers["x-compute-tokens"] == str(4 + 6)  # [CLS] and [SEP] counted, as TEI does
    assert headers["x-compute-time"] == headers["x-total-time"]
    phases = ("x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time")
    assert all(float(headers[name]) >= 0 for name in phases)
    cut = post(server, "/v1/embeddings", {"model": MODEL, "input": LONG}).headers
    assert cut["x-compute-tokens"] == "256" and cut["x-compute-characters"] == str(len(LONG))
    ids = post(server, "/embed", {"inputs": tei_ids(server, texts)}).headers
    # TEI counts an id as a character; ids are no text here.
    assert ids["x-compute-tokens"] == "10" and ids["x-compute-characters"] == "0"


# Text 80's dimension 334 (0.0105882) sits on a bin edge: int8 4 in float32, 3 in double.
EDGE_TEXTS = slice(75, 87)


def _floats(rows: list[str]) -> np.ndarray:
    return np.stack([np.frombuffer(base64.b64decode(row), dtype="<f4") for row in rows])


def test_openai_byte_encodings_are_sentence_transformers_own(server, reference, st_quantize):
    # The same request twice runs the same batch, so its float32 vectors (base64, exact) are the
    # ones the byte encodings were made from.
    body = {"model": MODEL, "input": reference["texts"][EDGE_TEXTS]}
    answer = post(server, "/v1/embeddings", {**body, "encoding_format": "base64"}).json()
    floats = _floats([item["embedding"] for item in answer["data"]])
    for kind in BYTE_ENCODINGS:
        data = post(server, "/v1/embeddings", {**body, "encoding_format": kind}).json()["data"]
        got = np.asarray([item["embedding"] for item in data])
        np.testing.assert_array_equal(got, st_quantize(floats, kind), err_msg=kind)


def test_cohere_embedding_types_are_sentence_transformers_own(server, reference, st_quantize):
    kinds = ["base64", *BYTE_ENCODINGS]
    body = {
        "model": MODEL,
        "texts": reference["texts"][EDGE_TEXTS],
        "input_type": "search_document",
    }
    embeddings = post(server, "/v2/embed", {**body, "embedding_types": kinds}).json()["embeddings"]
    floats = _floats(embeddings["base64"])
    for kind in BYTE_ENCODINGS:
        got = np.asarray(embeddings[kind])
        np.testing.assert_array_equal(got, st_quantize(floats, kind), err_msg=kind)


def test_cohere_input_types_pick_the_models_prompts():
    info = ModelInfo("m", 8, 16, "mean", True, False, "cpu", {"query": "q: ", "passage": "p: "})
    assert prompt_for("search_query", info) == "query"
    assert prompt_for("search_document", info) == "passage"
    assert prompt_for("clustering", info) is None


def test_similarity_matches_sentence_transformers_through_inference_client(server, minilm_dir):
    """TEI's /similarity, as huggingface_hub's InferenceClient calls it, against
    sentence-transformers' own cosine of its own vectors."""
    from huggingface_hub import InferenceClient
    from sentence_transformers import SentenceTransformer

    source = "How do I cancel my subscription?"
    sentences = ["Cancel it in the account settings.", "Our office opens at nine.", LONG]
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    vectors = model.encode([source, *sentences], convert_to_tensor=True)
    want = model.similarity(vectors[:1], vectors[1:])[0].numpy()
    client = InferenceClient(server.url + "/similarity", token=KEY)
    got = np.asarray(client.sentence_similarity(source, other_sentences=sentences))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.argmax(got) == 0
    # The top-level settings and `parameters`, as /embed takes them; errors in TEI's shape.
    left = post(
        server,
        "/similarity",
        {
            "inputs": {"source_sentence": source, "sentences": [LONG]},
            "truncation_direction": "Left",
        },
    ).json()
    want_left = engine_similarity(minilm_dir, source, [LONG], truncation_direction="left")
    np.testing.assert_allclose(left, want_left, rtol=0, atol=1e-5)
    empty = post(server, "/similarity", {"inputs": {"source_sentence": source, "sentences": []}})
    assert empty.status_code == 400 and empty.json()["error_type"] == "Empty"
    # An error names the sentence by its index in `sentences`, and the source by its name.
    blank = {"source_sentence": source, "sentences": ["a", ""]}
    blank = post(server, "/similarity", {"inputs": blank}).json()["error"]
    assert blank.startswith("sentences[1] is an empty string"), blank
    no_source = {"source_sentence": "", "sentences": ["a"]}
    no_source = post(server, "/similarity", {"inputs": no_source}).json()["error"]
    assert no_source.startswith("source_sentence is an empty string"), no_source
    bad = post(server, "/similarity", {"inputs": {"source_sentence": source}})
    assert bad.status_code == 422 and "sentences" in bad.json()["error"]


def test_similarity_errors_name_an_over_long_source_sentence_by_its_field(server, engine):
    """The source is computed after the sentences, in the same request, but it is not one of
    them: its errors name `source_sentence`, the sentences' errors `sentences[i]`."""
    body = {"inputs": {"source_sentence": LONG, "sentences": ["a", "b"]}, "truncate": False}
    response = post(server, "/similarity", body)
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("source_sentence has 402 tokens"), response.text
    body["inputs"] = {"source_sentence": "a", "sentences": ["b", LONG]}
    assert post(server, "/similarity", body).json()["error"].startswith("sentences[1] has 402")
    # The server's own limits per input, which hold even when truncation is on.
    limits = Limits(max_input_tokens=40, max_input_chars=300)
    with live_server(unhurried(api_keys=(KEY,), limits=limits), engines={MODEL: engine}) as small:
        body = {"inputs": {"source_sentence": "word " * 70, "sentences": ["a"]}}
        error = post(small, "/similarity", body).json()["error"]
        assert error.startswith("source_sentence has 350 characters"), error
        body = {"inputs": {"source_sentence": "word " * 45, "sentences": ["a"]}}
        error = post(small, "/similarity", body).json()["error"]
        assert error.startswith("source_sentence has 47 tokens; at most 40"), error
        body = {"inputs": {"source_sentence": "a", "sentences": ["a", "word " * 45]}}
        error = post(small, "/similarity", body).json()["error"]
        assert error.startswith("sentences[1] has 47 tokens; at most 40"), error
        # Ids to decode reach no model, so nothing would cut them: the message does not say so.
        error = post(small, "/decode", {"ids": [[2773] * 41]}).json()["error"]
        assert error == "ids[0] has 41 tokens; at most 40 are allowed per input", error
        error = post(small, "/embed", {"inputs": [[2773] * 41]}).json()["error"]
        assert error.endswith("per input, even when truncation is on"), error


def test_similarity_counts_the_source_with_the_sentences_and_says_so(engine):
    """TEI holds the source and the sentences together to max_client_batch_size (/info reports
    our max_inputs as it), so with a limit of 4, three sentences pass and four are refused; the
    message counts `sentences` as sent and says what the source adds."""
    limits = Limits(max_inputs=4)
    with live_server(unhurried(api_keys=(KEY,), limits=limits), engines={MODEL: engine}) as small:
        info = httpx.get(small.url + "/info", headers=auth()).json()
        assert info["max_client_batch_size"] == 4
        body = {"inputs": {"source_sentence": "a", "sentences": ["b", "c", "d"]}}
        assert len(post(small, "/similarity", body).json()) == 3
        body["inputs"]["sentences"].append("e")
        response = post(small, "/similarity", body)
        assert response.status_code == 422, response.text
        assert response.json() == {
            "error": "sentences has 4 items, 5 texts with source_sentence; at most 4 are "
            "allowed per request",
            "error_type": "Validation",
        }


def engine_similarity(minilm_dir, source, sentences, **kwargs):
    from embedserve.engine import Engine

    return Engine.from_pretrained(minilm_dir, cache_bytes=0).similarity(source, sentences, **kwargs)
