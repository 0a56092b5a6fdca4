"""Token arrays mean what OpenAI means: tiktoken ids, decoded to text and embedded as text, unless
the server is started with --token-encoding model."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from embedserve.cli import main
from embedserve.models import PullError
from embedserve.server.adapters import openai as openai_adapter
from embedserve.server.app import create_app
from embedserve.server.config import ServerConfig
from embedserve.server.schemas import parse_embeddings_request
from embedserve.token_encodings import load_encoding, rank_file

from tests.server.conftest import MODEL, LiveServer, live_server, unhurried
from tests.support import cosines

TEXTS = [
    "hello world",
    "wait ... ... ...",
    "Ünïcödé façade — naïve café",
    "日本語のテキスト",
    "emoji 🚀 test",
]


@pytest.fixture(scope="module")
def servers(engine) -> Iterator[dict[str, LiveServer]]:
    with (
        live_server(unhurried(), engines={MODEL: engine}) as cl100k,
        live_server(unhurried(token_encoding="o200k_base"), engines={MODEL: engine}) as o200k,
        live_server(unhurried(token_encoding="model"), engines={MODEL: engine}) as model,
    ):
        yield {"cl100k_base": cl100k, "o200k_base": o200k, "model": model}


def embed(server: LiveServer, inputs) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/embeddings", json={"model": MODEL, "input": inputs}, timeout=60
    )


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_tiktoken_ids_embed_as_their_text(servers, engine, encoding):
    ids = [load_encoding(encoding, fetch=False).encode(text) for text in TEXTS]
    response = embed(servers[encoding], ids)
    assert response.status_code == 200, response.text
    got = np.asarray([item["embedding"] for item in response.json()["data"]], np.float32)
    want = engine.embed(TEXTS)
    assert cosines(got, want.embeddings).min() >= 0.99999
    # usage counts the model's tokens, not the ids sent.
    assert response.json()["usage"]["prompt_tokens"] == want.total_tokens
    assert want.total_tokens != sum(len(i) for i in ids)


def test_model_encoding_reads_ids_in_the_model_vocabulary(servers, engine):
    ids = engine.tokenize(TEXTS[:1])[0][1:-1]  # without [CLS]/[SEP]
    response = embed(servers["model"], [ids])
    got = np.asarray(response.json()["data"][0]["embedding"], np.float32)[None]
    assert cosines(got, engine.embed(TEXTS[:1]).embeddings).min() >= 0.99999
    # The same ids read as cl100k_base are other text entirely.
    other = np.asarray(embed(servers["cl100k_base"], [ids]).json()["data"][0]["embedding"])[None]
    assert cosines(other, got).max() < 0.9


@pytest.mark.parametrize("bad", [100256, 100_277, -1, 2**40])
def test_ids_the_encoding_lacks_are_400_naming_the_input(servers, bad):
    response = embed(servers["cl100k_base"], [[15339], [15339, bad]])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_token_id" and error["param"] == "input"
    assert (
        error["message"].startswith("input[1] holds token id") and "cl100k_base" in error["message"]
    )


def test_the_per_input_limit_counts_the_ids_as_sent(servers, engine):
    ellipsis = load_encoding("cl100k_base", fetch=False).encode(" ...")
    assert len(ellipsis) == 1  # and three model tokens: 8,000 ids are 24,000 model tokens
    response = embed(servers["cl100k_base"], [ellipsis * 8000])
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == engine.model_info.max_tokens
    too_long = embed(servers["cl100k_base"], [[15339], ellipsis * 8193])
    assert too_long.status_code == 400
    error = too_long.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["message"].startswith("input[1] has 8193 tokens")


def test_a_large_body_is_parsed_off_the_event_loop(servers, engine, monkeypatch):
    """Decoding 16 MB of ids takes ~0.1 s: on the loop it would stall every other request."""
    threads: list[str] = []

    def recording(body: bytes, **kwargs):
        threads.append(threading.current_thread().name)
        return parse_embeddings_request(body, **kwargs)

    monkeypatch.setattr(openai_adapter, "parse_embeddings_request", recording)
    ids = load_encoding("cl100k_base", fetch=False).encode(TEXTS[0])
    small = embed(servers["cl100k_base"], [ids])
    large = embed(servers["cl100k_base"], [ids + [220] * 8000] * 16)  # ~510 KB of JSON
    assert small.status_code == large.status_code == 200, large.text
    assert len(large.json()["data"]) == 16
    assert not threads[0].startswith("embedserve-cpu")  # the loop's own thread
    assert threads[1].startswith("embedserve-cpu")


def test_server_fails_at_start_without_the_rank_file(tmp_path, monkeypatch, engine):
    monkeypatch.setenv("EMBEDSERVE_CACHE", str(tmp_path))
    (tmp_path / "tiktoken").mkdir()
    (tmp_path / "tiktoken" / "cl100k_base.tiktoken").write_bytes(b"not a rank file\n")
    with pytest.raises(PullError, match="embedserve pull tiktoken"):
        create_app(ServerConfig(), engines={MODEL: engine})
    with pytest.raises(PullError, match="--token-encoding model"):
        load_encoding("o200k_base", fetch=False)
    create_app(ServerConfig(token_encoding="model"), engines={MODEL: engine})  # needs no file


def test_pull_tiktoken_prints_the_checked_files(capsys):
    assert main(["pull", "tiktoken"]) == 0
    out = capsys.readouterr().out
    assert f"cl100k_base: {rank_file('cl100k_base')}" in out
    assert f"o200k_base: {rank_file('o200k_base')}" in out
