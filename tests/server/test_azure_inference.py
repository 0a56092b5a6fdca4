"""The unmodified `azure-ai-inference` EmbeddingsClient against a real server.

With AzureKeyCredential it sends `Authorization: Bearer KEY` and `api-key: KEY` together, and
`api-version=2024-05-01-preview` by default; it may leave `model` out.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
from azure.ai.inference import EmbeddingsClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)

from .conftest import KEY, MODEL

TEXTS = ["first document", "second, somewhat longer document about embeddings", "三"]


def vectors(result) -> np.ndarray:
    rows = []
    for item in result.data:
        if isinstance(item.embedding, str):
            rows.append(np.frombuffer(base64.b64decode(item.embedding), dtype="<f4"))
        else:
            rows.append(np.asarray(item.embedding, dtype=np.float32))
    return np.stack(rows)


@pytest.fixture(scope="module", params=["", "/models"], ids=["root", "models"])
def client(request, server):
    with EmbeddingsClient(
        endpoint=server.url + request.param, credential=AzureKeyCredential(KEY)
    ) as c:
        yield c


def test_embed_without_a_model_uses_the_default_model(client, engine):
    result = client.embed(input=TEXTS)
    assert result.model == MODEL
    assert [item.index for item in result.data] == [0, 1, 2]
    np.testing.assert_array_equal(vectors(result), engine.embed(TEXTS).embeddings)
    assert (
        result.usage.prompt_tokens == result.usage.total_tokens == engine.embed(TEXTS).total_tokens
    )


def test_embed_naming_the_model_and_base64(client, engine):
    result = client.embed(input=TEXTS, model=MODEL, encoding_format="base64")
    np.testing.assert_array_equal(vectors(result), engine.embed(TEXTS).embeddings)


def test_input_type_is_accepted_and_ignored_without_prompts(client, engine):
    for input_type in ("text", "query", "document"):
        result = client.embed(input=TEXTS, input_type=input_type)
        np.testing.assert_array_equal(vectors(result), engine.embed(TEXTS).embeddings)


def test_model_extras_pass_through_extension_fields(client, engine):
    result = client.embed(input=TEXTS, model_extras={"normalize": False})
    np.testing.assert_array_equal(vectors(result), engine.embed(TEXTS, normalize=False).embeddings)
    # Unknown extras under pass-through are accepted (there is nothing to pass them to).
    assert len(client.embed(input=TEXTS, model_extras={"top_k": 3}).data) == 3


def test_get_model_info(client):
    info = client.get_model_info()
    assert (info.model_name, info.model_type, info.model_provider_name) == (
        MODEL,
        "embeddings",
        "embedserve",
    )


def test_errors(server, client):
    with pytest.raises(ResourceNotFoundError):
        client.embed(input=TEXTS, model="nope")
    with pytest.raises(HttpResponseError) as info:
        client.embed(input=TEXTS, dimensions=8)
    assert info.value.status_code == 400
    with (
        EmbeddingsClient(endpoint=server.url, credential=AzureKeyCredential("wrong")) as wrong,
        pytest.raises(ClientAuthenticationError),
    ):
        wrong.embed(input=TEXTS)
