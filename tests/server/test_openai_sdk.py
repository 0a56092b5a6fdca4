"""The unmodified `openai` SDK against a real server: the engine's vectors and the reference's."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from tests.support import FP32_COSINE, cosines

from .conftest import KEY, MODEL, live_server, unhurried

TEXTS = ["The quick brown fox.", "Embeddings map text to vectors.", "ü ñ 日本語 🙂", "a"]


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0) as c:
        yield c


def vectors(response) -> np.ndarray:
    return np.asarray([item.embedding for item in response.data], dtype=np.float32)


def test_default_base64_decoding_gives_the_engine_vectors_exactly(client, engine):
    response = client.embeddings.create(model=MODEL, input=TEXTS)
    assert [item.index for item in response.data] == list(range(len(TEXTS)))
    assert response.model == MODEL and response.object == "list"
    expected = engine.embed(TEXTS)
    np.testing.assert_array_equal(vectors(response), expected.embeddings)
    assert response.usage.prompt_tokens == response.usage.total_tokens == expected.total_tokens


def test_float_format_gives_the_engine_vectors_exactly(client, engine):
    response = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    # float32 → shortest decimal → float32 is exact.
    np.testing.assert_array_equal(vectors(response), engine.embed(TEXTS).embeddings)


def test_the_reference_texts_match_sentence_transformers(client, reference):
    # Every 8th text plus the longest (over the model's limit): the engine's own tests cover all
    # 200; here the point is that HTTP adds nothing and loses nothing, so keep it quick.
    picked = sorted(
        {*range(0, len(reference["texts"]), 8), int(np.argmax(reference["tokens_untruncated"]))}
    )
    response = client.embeddings.create(model=MODEL, input=[reference["texts"][i] for i in picked])
    got = vectors(response)
    cos = cosines(got, reference["normalized"][picked])
    assert cos.min() >= FP32_COSINE, f"worst text {picked[int(cos.argmin())]}: {cos.min()}"
    # The longest text was cut at the model's limit, and usage counts what the model saw.
    assert response.usage.prompt_tokens == sum(reference["tokens_truncated"][i] for i in picked)


def test_a_single_string(client, engine):
    response = client.embeddings.create(model=MODEL, input="just one", encoding_format="float")
    assert len(response.data) == 1
    np.testing.assert_array_equal(vectors(response), engine.embed(["just one"]).embeddings)


def test_token_arrays(client, engine):
    # Token arrays are tiktoken cl100k_base ids, as OpenAI's (test_token_arrays.py has the rest).
    from embedserve.token_encodings import load_encoding

    encoding = load_encoding("cl100k_base", fetch=False)
    ids = [encoding.encode(t) for t in TEXTS]
    one = client.embeddings.create(model=MODEL, input=ids[0])
    np.testing.assert_array_equal(vectors(one), engine.embed(TEXTS[:1]).embeddings)
    many = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    np.testing.assert_array_equal(vectors(many), engine.embed(TEXTS).embeddings)


def test_extension_fields_through_extra_body(client, engine, reference):
    texts = reference["texts"][:8]
    raw = client.embeddings.create(model=MODEL, input=texts, extra_body={"normalize": False})
    np.testing.assert_array_equal(vectors(raw), engine.embed(texts, normalize=False).embeddings)
    assert cosines(vectors(raw), reference["unnormalized"][:8]).min() >= FP32_COSINE

    long = reference["texts"][int(np.argmax(reference["tokens_untruncated"]))]
    left = client.embeddings.create(
        model=MODEL, input=[long], extra_body={"truncation_direction": "left"}
    )
    np.testing.assert_array_equal(
        vectors(left), engine.embed([long], truncation_direction="left").embeddings
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input=[long], extra_body={"truncate": False})
    assert info.value.code == "context_length_exceeded" and info.value.param == "input"


def test_errors_surface_as_sdk_exceptions(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model=MODEL, input="a", dimensions=64)
    assert (bad.value.code, bad.value.param) == ("unsupported_parameter", "dimensions")
    with (
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0) as wrong,
        pytest.raises(openai.AuthenticationError),
    ):
        wrong.embeddings.create(model=MODEL, input="a")


def test_models_list(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "embedserve"


def test_base_url_without_v1_uses_the_root_routes(server, engine):
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as root:
        response = root.embeddings.create(model=MODEL, input=TEXTS)
    np.testing.assert_array_equal(vectors(response), engine.embed(TEXTS).embeddings)


def test_azure_openai_client_with_api_key(server, engine):
    with openai.AzureOpenAI(
        azure_endpoint=server.url, api_key=KEY, api_version="2024-10-21", max_retries=0
    ) as azure:
        response = azure.embeddings.create(model=MODEL, input=TEXTS)
        np.testing.assert_array_equal(vectors(response), engine.embed(TEXTS).embeddings)
        with pytest.raises(openai.NotFoundError):
            azure.embeddings.create(model="no-such-deployment", input="a")
    with openai.AzureOpenAI(
        azure_endpoint=server.url,
        azure_deployment=MODEL,
        api_key=KEY,
        api_version="2024-10-21",
        max_retries=0,
    ) as deployed:
        response = deployed.embeddings.create(
            model="ignored-the-deployment-decides", input=TEXTS[:2], encoding_format="float"
        )
        np.testing.assert_array_equal(vectors(response), engine.embed(TEXTS[:2]).embeddings)


def test_azure_openai_client_with_a_wrong_key(server):
    with (
        openai.AzureOpenAI(
            azure_endpoint=server.url, api_key="wrong", api_version="2024-10-21", max_retries=0
        ) as azure,
        pytest.raises(openai.AuthenticationError),
    ):
        azure.embeddings.create(model=MODEL, input="a")


def test_dimensions_with_allow_dimensions(engine):
    config = unhurried(api_keys=(KEY,), allow_dimensions=True)
    with (
        live_server(config, engines={MODEL: engine}) as live,
        openai.OpenAI(base_url=live.url + "/v1", api_key=KEY, max_retries=0) as client,
    ):
        for dims in (1, 64, 384):
            response = client.embeddings.create(model=MODEL, input=TEXTS, dimensions=dims)
            got = vectors(response)
            assert got.shape == (len(TEXTS), dims)
            np.testing.assert_array_equal(got, engine.embed(TEXTS, dimensions=dims).embeddings)
            np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
        for bad in (0, 385):
            with pytest.raises(openai.BadRequestError) as info:
                client.embeddings.create(model=MODEL, input="a", dimensions=bad)
            assert (info.value.code, info.value.param) == ("invalid_value", "dimensions")
