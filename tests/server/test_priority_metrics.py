"""/metrics per request class (issue #23): what admission decided for each priority, each class's
queue depth and each class's queue wait, beside the unlabelled series dashboards already read.
The model is held at its door (GatedEngine) while the queue is arranged; decisions and counts
are asserted, never speed."""

from __future__ import annotations

import time
from functools import partial

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..support.gated import GatedEngine, background, hold_the_model, queued_behind_a_held_run
from .conftest import MODEL, live_server, unhurried, wait_for

BATCH = {"x-priority": "batch"}
OUTCOMES = ("admitted", "refused", "shed")


def embed(server, body: dict, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(server.url + "/v1/embeddings", json=body, headers=headers, timeout=60)


def scrape(server) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, parsed as Prometheus text (a malformed exposition fails here):
    {(name, labels): value}."""
    response = httpx.get(server.url + "/metrics", timeout=30)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_of(samples: dict, priority: str) -> dict[str, float]:
    """`embedserve_priority_requests_total` for `priority`, by outcome."""
    return {
        outcome: samples[
            (
                "embedserve_priority_requests_total",
                frozenset({"priority": priority, "outcome": outcome}.items()),
            )
        ]
        for outcome in OUTCOMES
    }


def per_class(samples: dict, name: str, priority: str) -> float:
    return samples[(name, frozenset({"model": MODEL, "priority": priority}.items()))]


def waits(samples: dict, priority: str) -> float:
    """Queue waits observed for `priority` (a model's histograms appear with its first answer)."""
    key = frozenset({"model": MODEL, "priority": priority}.items())
    return samples.get(("embedserve_priority_queue_seconds_count", key), 0)


def queued(samples: dict, priority: str) -> float:
    return per_class(samples, "embedserve_priority_queue_inputs", priority)


def test_each_class_counts_in_its_own_series_and_the_old_series_stay(engine):
    with live_server(engines={MODEL: engine}) as server:
        before = scrape(server)
        # Every class's series is there before any request, at zero.
        for priority in ("interactive", "batch"):
            assert requests_of(before, priority) == dict.fromkeys(OUTCOMES, 0.0)
            assert queued(before, priority) == 0
        batch = embed(server, {"model": MODEL, "input": ["a corpus line", "another"]}, BATCH)
        assert batch.status_code == 200, batch.text
        body = {"model": MODEL, "input": "a query", "priority": "interactive"}
        assert embed(server, body).status_code == 200
        after = scrape(server)
    assert requests_of(after, "batch") == {"admitted": 1, "refused": 0, "shed": 0}
    assert requests_of(after, "interactive") == {"admitted": 1, "refused": 0, "shed": 0}
    # Each request's queue wait is observed once, under its own class, and in the old series.
    assert waits(after, "batch") == 1 and waits(after, "interactive") == 1
    model = frozenset({"model": MODEL}.items())
    assert after[("embedserve_queue_seconds_count", model)] == 2
    assert after[("embedserve_inputs_total", model)] == 3
    assert after[("embedserve_queue_inputs", model)] == 0


def test_queue_depth_and_wait_per_class_while_the_model_is_held(engine):
    gated = GatedEngine(engine)
    with live_server(engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher
        held, held_out = hold_the_model(gated, partial(embed, server), MODEL)
        texts = [f"batch document {i}" for i in range(5)]
        batch, batch_out = background(
            lambda: embed(server, {"model": MODEL, "input": texts}, BATCH)
        )
        wait_for(lambda: batcher.queued_inputs == 5)
        queries = ["query one", "query two", "query three"]
        query, query_out = background(lambda: embed(server, {"model": MODEL, "input": queries}))
        wait_for(lambda: batcher.queued_inputs == 8)
        waiting = scrape(server)
        gated.gate.set()
        for thread, out in ((held, held_out), (batch, batch_out), (query, query_out)):
            thread.join(30)
            assert out["value"].status_code == 200, out
        served = scrape(server)
    assert queued(waiting, "batch") == 5 and queued(waiting, "interactive") == 3
    assert waiting[("embedserve_queue_inputs", frozenset({"model": MODEL}.items()))] == 8
    # Nothing has left the queue yet but the held request, which waited for no batch.
    assert waits(waiting, "batch") == 0 and waits(waiting, "interactive") == 0
    assert queued(served, "batch") == 0 and queued(served, "interactive") == 0
    assert waits(served, "batch") == 1 and waits(served, "interactive") == 2
    # The batch request waited for the held run and the query's, which the test held open.
    assert per_class(served, "embedserve_priority_queue_seconds_sum", "batch") > 0
    assert requests_of(served, "batch")["admitted"] == 1
    assert requests_of(served, "interactive")["admitted"] == 2


@pytest.fixture
def crowded(engine):
    """A server whose model is held while 1.5 s of interactive work (at a rate the test sets)
    waits: over batch's limit (half the 2 s ceiling), within interactive's."""
    gated = GatedEngine(engine)
    with live_server(unhurried(max_wait_seconds=2.0), engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher
        with queued_behind_a_held_run(gated, batcher, partial(embed, server), MODEL):
            yield server


def test_a_refused_batch_request_counts_as_refused_batch(crowded):
    before = scrape(crowded)
    # Refused before its body is read (by the header), then at admission (by the body field).
    assert embed(crowded, {"model": MODEL, "input": "a batch text"}, BATCH).status_code == 429
    body = {"model": MODEL, "input": "a batch text", "priority": "batch"}
    assert embed(crowded, body).status_code == 429
    after = scrape(crowded)
    assert requests_of(after, "batch") == {"admitted": 0, "refused": 2, "shed": 0}
    # Interactive: the held request and the queued one, both admitted, nothing refused.
    assert requests_of(after, "interactive") == requests_of(before, "interactive")
    assert requests_of(after, "interactive") == {"admitted": 2, "refused": 0, "shed": 0}
    # A refused request never queued: the depth per class is what it was.
    assert queued(after, "batch") == 0 and queued(after, "interactive") == 64


def test_a_shed_request_counts_as_shed_in_its_own_class(engine):
    """Overload confirmed while the model is held sheds the queued work that would finish past
    its class's limit: each shed request counts as `shed` (after `admitted`), the arrival that
    then does not fit as `refused`. Sizes in tokens against a small budget, at a rate the test
    sets, so no CPU speed enters the test."""
    gated = GatedEngine(engine)
    gated.max_batch_tokens = 64  # overload is detected at 16 full runs: 1,024 tokens
    with live_server(engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher
        held, held_out = hold_the_model(gated, partial(embed, server), MODEL)
        texts = [f"batch document {i}" for i in range(5)]
        batch, batch_out = background(
            lambda: embed(server, {"model": MODEL, "input": texts}, BATCH)
        )
        wait_for(lambda: batcher.queued_inputs == 5)
        long_texts = [f"queued interactive text number {i} of a long request" for i in range(120)]
        big, big_out = background(lambda: embed(server, {"model": MODEL, "input": long_texts}))
        wait_for(lambda: batcher.queued_inputs == 125)
        for _ in range(100):
            batcher.record_throughput(30 * 64, 1.0)  # a full run in 1/30 s: a 0.1 s target
        # The interactive work queued is a standing queue above the detection level, and the
        # big request alone is more than the target (it is kept: never shed for its own size).
        assert batcher.estimated_wait() > batcher.policy.detect_seconds
        assert batcher.policy.target < 0.2
        # The first arrival to meet the standing queue: admitted at the ceiling, and the
        # interval starts.
        first, first_out = background(lambda: embed(server, {"model": MODEL, "input": "one"}))
        wait_for(lambda: batcher.queued_inputs == 126)
        time.sleep(batcher.policy.target + 0.05)  # the standing queue has lasted an interval
        confirming = embed(server, {"model": MODEL, "input": "two"})
        assert batcher.policy.overloaded
        assert confirming.status_code == 429, confirming.text  # refused after the shedding
        for thread in (batch, first):
            thread.join(30)
        shed_answers = [batch_out["value"], first_out["value"]]
        assert [a.status_code for a in shed_answers] == [429, 429], shed_answers
        assert all(a.json()["error"]["code"] == "queue_full" for a in shed_answers)
        overloaded = scrape(server)
        gated.gate.set()
        for thread, out in ((held, held_out), (big, big_out)):
            thread.join(60)
            assert out["value"].status_code == 200, out
    assert requests_of(overloaded, "batch") == {"admitted": 1, "refused": 0, "shed": 1}
    # Admitted: the held request, the big one (kept) and the first query (then shed).
    assert requests_of(overloaded, "interactive") == {"admitted": 3, "refused": 1, "shed": 1}
    assert queued(overloaded, "batch") == 0 and queued(overloaded, "interactive") == 120


def test_cohere_priority_maps_onto_the_two_classes(engine):
    """Cohere's `priority` (0, its default, the highest): 0 keeps the request's class, a larger
    number is batch work. Sent by the real SDK; the decision read from /metrics."""
    import cohere

    with live_server(engines={MODEL: engine}) as server, httpx.Client() as http:
        client = cohere.ClientV2(base_url=server.url, api_key="unused", httpx_client=http)
        for priority in (0, 3):
            response = client.embed(
                texts=["a"], model=MODEL, input_type="search_query", priority=priority
            )
            assert len(response.embeddings.float_) == 1
        after = scrape(server)
        body = {"model": MODEL, "texts": ["a"], "input_type": "search_query", "priority": -1}
        negative = httpx.post(server.url + "/v2/embed", json=body, timeout=60)
    assert requests_of(after, "interactive") == {"admitted": 1, "refused": 0, "shed": 0}
    assert requests_of(after, "batch") == {"admitted": 1, "refused": 0, "shed": 0}
    assert negative.status_code == 400 and "$.priority" in negative.json()["message"]
