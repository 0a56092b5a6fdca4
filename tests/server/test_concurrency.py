"""Many clients at once share batches and each still gets exactly its own vectors."""

from __future__ import annotations

import asyncio
import base64
import random

import httpx
import numpy as np

from tests.support import cosines

from ..support.gated import GatedEngine, background, hold_the_model
from .conftest import KEY, MODEL, auth, live_server, metric_samples, unhurried, wait_for

CLIENTS = 64


def decode(body: dict) -> np.ndarray:
    rows = []
    for item in body["data"]:
        emb = item["embedding"]
        rows.append(
            np.frombuffer(base64.b64decode(emb), "<f4")
            if isinstance(emb, str)
            else np.asarray(emb, np.float32)
        )
    return np.stack(rows)


def make_requests(reference) -> list[dict]:
    rng = random.Random(1234)
    # Mostly short texts, some medium, a few over the model's limit: varied lengths, small bodies.
    tokens = reference["tokens_untruncated"]
    short = [t for t, n in zip(reference["texts"], tokens, strict=True) if n <= 48]
    medium = [t for t, n in zip(reference["texts"], tokens, strict=True) if 48 < n <= 160]
    long = [t for t, n in zip(reference["texts"], tokens, strict=True) if n > 256]
    requests = []
    for i in range(CLIENTS):
        count = rng.choice([1, 1, 2, 3, 4, 6, 9])
        texts = [rng.choice(short) for _ in range(count)]
        if i % 8 == 0:
            texts[rng.randrange(count)] = rng.choice(medium)
        if i % 32 == 0:
            texts.append(rng.choice(long))
        requests.append(
            {"model": MODEL, "input": texts, "encoding_format": "base64" if i % 2 else "float"}
        )
    return requests


async def send_all(url: str, requests: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=url, headers=auth(), timeout=600, limits=limits
    ) as client:
        start = asyncio.Event()

        async def one(body: dict) -> httpx.Response:
            await start.wait()
            return await client.post("/v1/embeddings", json=body)

        tasks = [asyncio.create_task(one(body)) for body in requests]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)


def test_64_concurrent_clients_get_their_own_vectors_and_share_batches(engine, reference):
    requests = make_requests(reference)
    gated = GatedEngine(engine)
    with live_server(unhurried(api_keys=(KEY,)), engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher

        def send(body: dict) -> httpx.Response:
            return httpx.post(server.url + "/v1/embeddings", json=body, headers=auth(), timeout=60)

        # The 64 arrive while a first request holds the model, so they wait together and share
        # batches on any machine (unheld, a fast server could run each alone as it arrives).
        held, held_out = hold_the_model(gated, send, MODEL)
        sent, sent_out = background(lambda: asyncio.run(send_all(server.url, requests)))
        wait_for(lambda: batcher.queued_inputs == sum(len(r["input"]) for r in requests))
        gated.gate.set()
        sent.join(120)
        held.join(30)
        assert held_out["value"].status_code == 200, held_out
        responses = sent_out["value"]
        text = httpx.get(server.url + "/metrics").text

    for body, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()
        assert [d["index"] for d in got["data"]] == list(range(len(body["input"])))
        expected = engine.embed(body["input"])  # the engine alone, one request at a time
        vectors = decode(got)
        assert vectors.shape == expected.embeddings.shape
        # Other requests' rows in the batch change only padding, never a row's own values.
        assert cosines(vectors, expected.embeddings).min() >= 0.999999
        np.testing.assert_allclose(vectors, expected.embeddings, atol=1e-6)
        assert got["usage"]["prompt_tokens"] == expected.total_tokens

    per_batch = metric_samples(text, "embedserve_batch_requests_bucket")
    singles = per_batch[f'embedserve_batch_requests_bucket{{le="1.0",model="{MODEL}"}}']
    batches = per_batch[f'embedserve_batch_requests_bucket{{le="+Inf",model="{MODEL}"}}']
    assert batches > singles, "no batch held more than one request"
    assert batches < CLIENTS  # requests were merged, not run one by one

    counted = metric_samples(text, "embedserve_requests_total")
    key = 'embedserve_requests_total{method="POST",route="/v1/embeddings",status="200"}'
    assert counted[key] >= CLIENTS
    inputs = metric_samples(text, "embedserve_inputs_total")[
        f'embedserve_inputs_total{{model="{MODEL}"}}'
    ]
    assert inputs >= sum(len(r["input"]) for r in requests)
    for phase in ("tokenization", "queue", "inference"):
        count = metric_samples(text, f"embedserve_{phase}_seconds_count")
        assert count[f'embedserve_{phase}_seconds_count{{model="{MODEL}"}}'] >= CLIENTS
    assert (
        metric_samples(text, "embedserve_queue_inputs")[
            f'embedserve_queue_inputs{{model="{MODEL}"}}'
        ]
        == 0
    )
