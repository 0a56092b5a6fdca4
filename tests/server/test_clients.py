"""Popular clients, unmodified, against the real server on loopback: each must get the engine's
own vectors for the same texts (cosine >= 0.9999).

LangChain's `OpenAIEmbeddings` at its defaults sends tiktoken `cl100k_base` ids, not text; the
server decodes them (server/token_arrays.py). tiktoken in the client reads its rank file from
TIKTOKEN_CACHE_DIR, named by the sha1 of its download URL, as tiktoken itself caches it.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from embedserve.quantization import quantize

from tests.server.conftest import KEY, MODEL, LiveServer, live_server, unhurried
from tests.support import cosines, fill_tiktoken_cache

CLIENT_COSINE = 0.9999


@pytest.fixture(scope="module")
def texts(reference) -> list[str]:
    # Paragraphs, one past the model's 256 tokens, and the short edge cases (unicode, CJK, emoji,
    # code, surrounding spaces).
    return reference["texts"][:4] + reference["texts"][187:188] + reference["texts"][190:]


@pytest.fixture(scope="module")
def expected(engine, texts) -> np.ndarray:
    return engine.embed(texts).embeddings


@pytest.fixture(scope="module")
def server(engine) -> Iterator[LiveServer]:
    with live_server(unhurried(api_keys=(KEY,)), engines={MODEL: engine}) as live:
        yield live


@pytest.fixture(scope="module")
def tiktoken_cache(tmp_path_factory) -> Iterator[Path]:
    """tiktoken's own cache, filled from our checked rank files, so the client never downloads."""
    folder = fill_tiktoken_cache(tmp_path_factory.mktemp("tiktoken-cache"))
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    else:
        os.environ["TIKTOKEN_CACHE_DIR"] = old


def test_tiktoken_cache_names_are_the_ones_tiktoken_reads(tiktoken_cache):
    assert sorted(p.name for p in tiktoken_cache.iterdir()) == [
        "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        "fb374d419588a4632f3f557e76b4b70aebbca790",
    ]


class BodyRecorder:
    """An httpx event hook keeping the JSON bodies a client sends, to see what went on the wire."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> None:
        self.bodies.append(json.loads(request.read()))


def assert_same(got, expected: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == expected.shape
    assert cosines(got, expected).min() >= CLIENT_COSINE


def test_langchain_openai_defaults_send_token_ids(server, texts, expected, tiktoken_cache):
    from langchain_openai import OpenAIEmbeddings

    recorder = BodyRecorder()
    with httpx.Client(event_hooks={"request": [recorder]}) as http:
        client = OpenAIEmbeddings(
            model=MODEL, base_url=server.url + "/v1", api_key=KEY, http_client=http
        )
        assert client.check_embedding_ctx_length and client.tiktoken_enabled  # the defaults
        assert_same(client.embed_documents(texts), expected)
        assert_same([client.embed_query(texts[0])], expected[:1])
    # What went over the wire was cl100k_base ids, not text.
    sent = recorder.bodies[0]["input"]
    assert all(isinstance(ids, list) and all(isinstance(t, int) for t in ids) for ids in sent)
    assert max(max(ids) for ids in sent) > 30_521  # past MiniLM's vocabulary: not model ids


def test_langchain_openai_without_ctx_length_check_sends_text(server, texts, expected):
    from langchain_openai import OpenAIEmbeddings

    recorder = BodyRecorder()
    with httpx.Client(event_hooks={"request": [recorder]}) as http:
        client = OpenAIEmbeddings(
            model=MODEL,
            base_url=server.url + "/v1",
            api_key=KEY,
            check_embedding_ctx_length=False,
            http_client=http,
        )
        assert_same(client.embed_documents(texts), expected)
    assert recorder.bodies[0]["input"] == texts


def test_langchain_azure_openai(server, texts, expected, tiktoken_cache):
    from langchain_openai import AzureOpenAIEmbeddings

    client = AzureOpenAIEmbeddings(
        azure_endpoint=server.url,
        azure_deployment=MODEL,
        api_version="2024-02-01",
        api_key=KEY,
    )
    assert_same(client.embed_documents(texts), expected)


def test_llama_index_openai_like(server, texts, expected):
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    client = OpenAILikeEmbedding(model_name=MODEL, api_base=server.url + "/v1", api_key=KEY)
    assert_same(client.get_text_embedding_batch(texts), expected)
    assert_same([client.get_query_embedding(texts[0])], expected[:1])


def test_litellm(server, texts, expected, monkeypatch):
    # Read litellm's bundled price list instead of fetching one (there is no network here).
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    try:
        response = litellm.embedding(
            model=f"openai/{MODEL}", input=texts, api_base=server.url + "/v1", api_key=KEY
        )
    finally:
        close_the_main_threads_event_loop()
        close_litellms_clients(litellm)
    assert_same([item["embedding"] for item in response.data], expected)


def close_litellms_clients(litellm: Any) -> None:
    """litellm keeps the SDK client it made (and its open connection to the test server) in a
    module-level cache and never closes it: the socket's warning came at the worker's exit."""
    for client in list(litellm.in_memory_llm_clients_cache.cache_dict.values()):
        close = getattr(client, "close", None)
        if callable(close) and not inspect.iscoroutinefunction(close):
            close()


def close_the_main_threads_event_loop() -> None:
    """litellm's service logger gives the main thread an event loop (`asyncio.get_event_loop()`)
    and never closes it: the next test to run `asyncio.run` dropped it, and the unclosed loop's
    warning failed whichever test was running when it was collected. Where an earlier
    `asyncio.run` in this process left the main thread's loop unset, asking for it raises, and
    litellm had none to leave."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            return
    loop.close()
    asyncio.set_event_loop(None)


def test_huggingface_hub_feature_extraction(server, texts, expected):
    from huggingface_hub import InferenceClient

    client = InferenceClient(server.url, api_key=KEY)
    got = np.concatenate([client.feature_extraction(text) for text in texts[:3]])
    assert_same(got, expected[:3])


def test_ollama_embed(server, texts, expected):
    import ollama

    with ollama.Client(host=server.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        response = client.embed(model=MODEL, input=texts)
        assert_same(response.embeddings, expected)
        assert response.prompt_eval_count > len(texts)
        assert [m.model for m in client.list().models] == [MODEL]
        # Ollama's ":latest" tag names the same model.
        assert_same(client.embed(model=MODEL + ":latest", input=texts[:1]).embeddings, expected[:1])


@pytest.fixture(scope="module")
def unnormalized(tmp_path_factory, minilm_dir) -> Iterator[tuple[Any, np.ndarray]]:
    """An Ollama client of a server whose model does not normalize (all-MiniLM-L6-v2 less its
    Normalize module), and that model's own vector of "hello world"."""
    import shutil

    import ollama
    from embedserve.engine import Engine

    folder = shutil.copytree(minilm_dir, tmp_path_factory.mktemp("ollama") / "no-normalize")
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(
        json.dumps([m for m in modules if "Normalize" not in m["type"]])
    )
    engine = Engine.from_pretrained(folder, name=MODEL)
    raw = engine.embed(["hello world"]).embeddings
    assert abs(np.linalg.norm(raw) - 1) > 0.1  # the model's own vectors are not unit length
    with (
        live_server(unhurried(api_keys=(KEY,)), engines={MODEL: engine}) as live,
        ollama.Client(host=live.url, headers={"Authorization": f"Bearer {KEY}"}) as client,
    ):
        yield client, raw


def test_ollama_loads_a_model_with_no_input(unnormalized):
    """Ollama answers a request with no input with no embeddings: how its clients load a model."""
    import ollama

    client, _ = unnormalized
    for empty in ("", []):
        response = client.embed(model=MODEL, input=empty)
        assert response.embeddings == [] and response.model == MODEL
    assert client.embeddings(model=MODEL, prompt="").embedding == []
    with pytest.raises(ollama.ResponseError) as missing:
        client.embed(model="nope", input="")
    assert missing.value.status_code == 404
    # A list holding an empty text is an input (Ollama embeds it): refused, not answered empty.
    with pytest.raises(ollama.ResponseError) as empty_text:
        client.embed(model=MODEL, input=[""])
    assert empty_text.value.status_code == 400 and "input[0]" in str(empty_text.value)


def test_ollama_embed_is_unit_length_whatever_the_model(unnormalized):
    """Ollama's /api/embed normalizes every vector; its legacy route gives the model's own."""
    client, raw = unnormalized
    got = np.asarray(client.embed(model=MODEL, input=["hello world"]).embeddings)
    np.testing.assert_allclose(np.linalg.norm(got), 1, rtol=1e-5)
    assert cosines(got, raw).min() >= 0.99999
    legacy = client.embeddings(model=MODEL, prompt="hello world").embedding
    np.testing.assert_allclose(legacy, raw[0], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def cohere_client(server):
    import cohere

    with httpx.Client() as http:  # ours, so it is closed when the module is done
        yield cohere.ClientV2(base_url=server.url, api_key=KEY, httpx_client=http)


def test_cohere_float_and_base64(cohere_client, texts, expected):
    response = cohere_client.embed(
        texts=texts, model=MODEL, input_type="search_document", embedding_types=["float", "base64"]
    )
    assert_same(response.embeddings.float_, expected)
    decoded = [
        np.frombuffer(base64.b64decode(row), dtype="<f4") for row in response.embeddings.base64
    ]
    assert_same(decoded, expected)
    assert response.meta.billed_units.input_tokens > len(texts)


def test_cohere_max_tokens(cohere_client, engine):
    """cohere-python's ClientV2.embed sends `max_tokens` (cohere 5.21.1's v2/raw_client.py): each
    text cut to that many tokens, the model's special tokens included, on `truncate`'s side."""
    import cohere

    text = "the quick brown fox jumps over the lazy dog"
    response = cohere_client.embed(
        texts=[text], model=MODEL, input_type="search_document", max_tokens=6, truncate="START"
    )
    content = engine.tokenizer.content_ids([text])[0]
    want = engine.embed([content[-4:]]).embeddings
    assert cosines(np.asarray(response.embeddings.float_, np.float32), want).min() >= 0.99999
    assert response.meta.billed_units.input_tokens == 6
    with pytest.raises(cohere.BadRequestError) as refused:
        cohere_client.embed(
            texts=[text], model=MODEL, input_type="search_document", max_tokens=6, truncate="NONE"
        )
    assert refused.value.body["message"].startswith("texts[0] has 11 tokens, more than max_tokens")


def test_cohere_inputs_and_images(cohere_client, texts, expected):
    """cohere-python 5.21.1's ClientV2.embed sends `inputs` (`EmbedInput`s of `TextEmbedContent`
    and `ImageUrlEmbedContent` parts) and `images` (v2/raw_client.py): text parts embed as the
    same texts do, one embedding per input; images are refused in Cohere's shape."""
    import cohere

    inputs = [cohere.EmbedInput(content=[cohere.TextEmbedContent(text=text)]) for text in texts]
    response = cohere_client.embed(inputs=inputs, model=MODEL, input_type="search_document")
    assert_same(response.embeddings.float_, expected)
    assert response.texts == texts
    image = cohere.ImageUrlEmbedContent(
        image_url=cohere.EmbedImageUrl(url="data:image/png;base64,")
    )
    with pytest.raises(cohere.BadRequestError) as mixed:
        cohere_client.embed(
            inputs=[cohere.EmbedInput(content=[cohere.TextEmbedContent(text="a"), image])],
            model=MODEL,
            input_type="search_document",
        )
    assert mixed.value.body == {
        "message": f"inputs[0].content[1] is an image_url part; the model `{MODEL}` embeds text "
        "only: send text parts"
    }
    with pytest.raises(cohere.BadRequestError) as images:
        cohere_client.embed(images=["data:image/png;base64,"], model=MODEL, input_type="image")
    assert "embeds text only" in images.value.body["message"]


@pytest.mark.parametrize("kind", ["int8", "uint8"])
def test_cohere_scalar_quantized(cohere_client, texts, expected, kind):
    response = cohere_client.embed(
        texts=texts, model=MODEL, input_type="search_document", embedding_types=[kind]
    )
    got = np.asarray(getattr(response.embeddings, kind))
    want = quantize(expected, kind)
    assert got.shape == want.shape
    # Batches differ from the engine's run in the last float bits; a value may cross a bin edge.
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    # Bin centres (bins are floors) on the fixed [-0.3, 0.3] range point where the floats do, up
    # to the step of 0.6 / 255 (measured cosine 0.9996).
    centered = got + (0.5 if kind == "int8" else -127.5)
    assert cosines(centered, expected).min() >= 0.999


@pytest.mark.parametrize("kind", ["binary", "ubinary"])
def test_cohere_binary(cohere_client, texts, expected, kind):
    response = cohere_client.embed(
        texts=texts, model=MODEL, input_type="search_document", embedding_types=[kind]
    )
    got = np.asarray(getattr(response.embeddings, kind))
    assert got.shape == (len(texts), expected.shape[1] // 8)
    raw = (got + 128 if kind == "binary" else got).astype(np.uint8)
    bits = np.unpackbits(raw, axis=1)
    want = (expected > 0).astype(np.uint8)
    # Only components within float noise of zero may flip sign between two runs.
    flipped = bits != want
    assert np.abs(expected[flipped]).max(initial=0) < 1e-5
