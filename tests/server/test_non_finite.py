"""A model whose output holds NaN (a broken checkpoint, float16 overflow on a GPU): every
embedding route answers a 500 in its own error shape naming the input, for every encoding,
and the server goes on serving. Before, `float` gave a bare "internal error", and base64 and
the byte encodings answered 200 with NaN bytes, -128s or zero bits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import transformers
from embedserve.engine import Engine
from embedserve.reranker import Reranker
from embedserve.server.config import ModelSpec

from tests.server.conftest import LiveServer, live_server, unhurried
from tests.support import cross_encoders
from tests.support.tiny import tiny_bert_folder

WORDS = "the model produced a non-finite value (nan) for"


def _tiny_bert(folder: Path, minilm_dir: Path, *, nan: bool) -> Path:
    def poison(model: transformers.BertModel) -> None:
        # Every hidden state, so every pooled vector, becomes NaN.
        model.encoder.layer[0].output.dense.bias.fill_(float("nan"))

    return tiny_bert_folder(folder, minilm_dir, edit=poison if nan else None)


def _nan_cross_encoder(folder: Path, minilm_dir: Path) -> Path:
    cross_encoders.bert_cross_encoder(folder, minilm_dir)
    model = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():  # every score becomes NaN
        model.classifier.bias.fill_(float("nan"))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, minilm_dir) -> Iterator[LiveServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBEDSERVE_CACHE", str(tmp_path_factory.mktemp("cache")))
        folders = {
            name: _tiny_bert(tmp_path_factory.mktemp(name), minilm_dir, nan=name == "nan")
            for name in ("nan", "good")
        }
        engines: dict[str, object] = {
            name: Engine.from_pretrained(f, name=name) for name, f in folders.items()
        }
        engines["rerank-nan"] = Reranker.from_pretrained(
            _nan_cross_encoder(tmp_path_factory.mktemp("rerank"), minilm_dir), name="rerank-nan"
        )
    config = unhurried(models=tuple(ModelSpec(name, name) for name in engines))
    with live_server(config, engines=engines) as live:
        yield live


# (route, body, the input the error names, how the body holds the message)
OPENAI = [
    (
        "/v1/embeddings",
        {"model": "nan", "input": ["a", "b"], "encoding_format": fmt},
        "input[0]",
        lambda body: body["error"]["message"],
    )
    for fmt in ("float", "base64", "int8", "uint8", "binary", "ubinary")
]
OTHERS = [
    ("/embed", {"inputs": ["a"]}, "inputs[0]", lambda body: body["error"]),
    ("/embed_all", {"inputs": ["a", "b"]}, "inputs[0]", lambda body: body["error"]),
    (
        "/v1/rerank",
        {"model": "rerank-nan", "query": "q", "documents": ["a", "b"]},
        "documents[0]",
        lambda body: body["message"],  # Cohere's error shape
    ),
    ("/api/embed", {"model": "nan", "input": ["a"]}, "input[0]", lambda body: body["error"]),
    (
        "/v2/embed",
        {"model": "nan", "texts": ["a"], "input_type": "search_query"},
        "texts[0]",
        lambda body: body["message"],
    ),
]


@pytest.mark.parametrize(
    ("route", "request_body", "names", "message"),
    OPENAI + OTHERS,
    ids=[f"openai-{c[1]['encoding_format']}" for c in OPENAI] + [c[0] for c in OTHERS],
)
def test_a_nan_vector_is_a_clear_500_and_the_server_goes_on(
    server, route, request_body, names, message
):
    # TEI's /embed serves the first model; ask it of a server whose first model is the NaN one.
    answer = httpx.post(server.url + route, json=request_body, timeout=60)
    assert answer.status_code == 500, answer.text
    said = message(answer.json())
    assert f"{WORDS} {names};" in said, said
    if route == "/v1/embeddings":
        assert answer.json()["error"]["code"] == "non_finite_output"
    good = httpx.post(
        server.url + "/v1/embeddings", json={"model": "good", "input": ["a"]}, timeout=60
    )
    assert good.status_code == 200, good.text
    assert np.isfinite(good.json()["data"][0]["embedding"]).all()
