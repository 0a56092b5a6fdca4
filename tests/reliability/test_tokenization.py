"""Problem 3: a 5 MB single "word" held a tokenizer thread for 6.5 s before its 400, and two such
requests stalled every client (a 1-text request waited 7-10 s)."""

from __future__ import annotations

import json
import random
import threading

import httpx
import pytest
from embedserve.server.config import Limits

from ..server.conftest import live_server, unhurried
from .conftest import MODEL, embed, error_of


def test_a_5mb_word_is_refused_on_characters(engine):
    word = "".join(random.Random(0).choices("ABCDEFGHIJabcdefghij0123456789+/", k=5_000_000))
    with live_server(engines={MODEL: engine}) as server:
        response = embed(server.url, {"model": MODEL, "input": word})
        error = error_of(response, 400, "context_length_exceeded")
        assert error["message"] == (
            "input[0] has 5000000 characters; at most 131072 are allowed per input"
        )
        # Refused before the tokenizer: the request never spent time in it.
        assert float(response.headers.get("x-tokenization-time", "0")) == 0.0
        assert len(server.state.pipeline._tokens_per_char) == 0


WORDS = [
    "serve",
    "embed",
    "vector",
    "token",
    "batch",
    "queue",
    "model",
    "tensor",
    "latency",
    "throughput",
    "window",
    "drain",
    "request",
    "client",
    "server",
    "limit",
    "budget",
    "chunk",
    "thread",
    "fair",
    "light",
    "heavy",
]


def text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        words.append(rng.choice(WORDS))
        size += len(words[-1]) + 1
    return " ".join(words)


def test_heavy_requests_do_not_starve_a_light_one(engine):
    # Each heavy request tokenizes ~2.8 M characters (about 40 chunks) before its token limit
    # stops it; a 1-text request sent after two of them must not wait for either to finish.
    rng = random.Random(1)
    heavy = json.dumps({"model": MODEL, "input": [text(rng, 3000) for _ in range(2048)]})
    config = unhurried(limits=Limits(max_request_chars=10**8, max_request_tokens=400_000))
    with live_server(config, engines={MODEL: engine}) as server:
        done: dict[str, httpx.Response] = {}

        def send(name: str) -> None:
            done[name] = embed(server.url, heavy, timeout=60)

        threads = [threading.Thread(target=send, args=(f"heavy{i}",)) for i in range(2)]
        for thread in threads:
            thread.start()
        pipeline = server.state.pipeline
        # Wait until both heavy requests are admitted (they are then being tokenized).
        for _ in range(600):
            if pipeline.active >= 2:
                break
            threading.Event().wait(0.05)
        assert pipeline.active >= 2, "the heavy requests never started"
        light = embed(server.url, {"model": MODEL, "input": "a light request"})
        heavy_done_before_light = sorted(done)
        for thread in threads:
            thread.join(60)
        assert light.status_code == 200, light.text
        assert heavy_done_before_light == [], "the light request waited for a heavy one"
        for name in ("heavy0", "heavy1"):
            error_of(done[name], 400, "too_many_tokens")


@pytest.mark.parametrize("chars", [131_072])
def test_an_input_at_the_character_limit_is_served(engine, chars):
    # The character limit refuses nothing a real 8,192-token input could be: a 128 Ki-character
    # input of words (~30 k tokens) gets past it and is refused on tokens, not characters.
    rng = random.Random(2)
    with live_server(engines={MODEL: engine}) as server:
        body = {"model": MODEL, "input": text(rng, chars)[:chars]}
        error = error_of(embed(server.url, body), 400, "context_length_exceeded")
        assert "tokens" in error["message"] and "characters" not in error["message"]
