"""Request priorities (issue #23): `X-Priority: batch` (or a body's `priority` field, where the wire
format takes extra fields) puts a request in the batch lane. Batch work is served when no
interactive work waits, and under load it is refused before interactive work. Order and
decisions are asserted, never speed: the model is held at its door (GatedEngine) while the
queue is arranged."""

from __future__ import annotations

from functools import partial

import httpx

from ..server.conftest import live_server, unhurried, wait_for
from ..support.gated import GatedEngine, background, hold_the_model, queued_behind_a_held_run
from .conftest import MODEL, embed, error_of

BATCH = {"x-priority": "batch"}


def test_interactive_requests_are_served_ahead_of_queued_batch_work(engine):
    gated = GatedEngine(engine)
    with live_server(engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher
        held, held_out = hold_the_model(gated, partial(embed, server.url), MODEL)
        batch_texts = [f"batch document {i}" for i in range(5)]
        batch, batch_out = background(
            lambda: embed(server.url, {"model": MODEL, "input": batch_texts}, headers=BATCH)
        )
        wait_for(lambda: batcher.queued_inputs == 5)
        # After the batch request, by the body field this time: served before it.
        body = {"model": MODEL, "input": "an interactive query", "priority": "interactive"}
        query, query_out = background(lambda: embed(server.url, body))
        wait_for(lambda: batcher.queued_inputs == 6)
        gated.gate.set()
        for thread, out in ((held, held_out), (batch, batch_out), (query, query_out)):
            thread.join(30)
            assert out["value"].status_code == 200, out
    # The held run, then the interactive query alone, then the batch request's five texts
    # (first in, but in the batch lane).
    assert gated.batches == [1, 1, 5], gated.batches
    assert len(query_out["value"].json()["data"]) == 1


def test_batch_work_is_refused_before_interactive_work_under_load(engine):
    gated = GatedEngine(engine)
    with live_server(unhurried(max_wait_seconds=2.0), engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher
        send = partial(embed, server.url)
        with queued_behind_a_held_run(gated, batcher, send, MODEL):
            for body, headers in (
                ({"model": MODEL, "input": "a batch text"}, BATCH),  # refused before the body
                ({"model": MODEL, "input": "a batch text", "priority": "batch"}, {}),  # after
            ):
                refused = embed(server.url, body, headers=headers)
                error = error_of(refused, 429, "queue_full")
                assert "would finish in about 1.5s" in error["message"]
                assert 1 <= int(refused.headers["retry-after"]) <= 60
            admitted, admitted_out = background(
                lambda: embed(server.url, {"model": MODEL, "input": "an interactive text"})
            )
            wait_for(lambda: batcher.queued_inputs == 65)  # admitted and queued, not refused
        admitted.join(30)
        assert admitted_out["value"].status_code == 200, admitted_out


def test_an_unknown_priority_is_a_400_that_names_where_it_came_from(engine):
    with live_server(engines={MODEL: engine}) as server:
        response = embed(server.url, {"model": MODEL, "input": "x"}, headers={"x-priority": "now"})
        error = error_of(response, 400, "invalid_value")
        assert error["param"] == "x-priority"
        assert "priority must be one of interactive, batch, got 'now'" in error["message"]
        response = embed(server.url, {"model": MODEL, "input": "x", "priority": "urgent"})
        assert error_of(response, 400, "invalid_value")["param"] == "priority"
        # Through the OpenAI SDK's extra_body too, merged into the top level.
        body = {"model": MODEL, "input": "x", "extra_body": {"priority": "batch"}}
        assert httpx.post(server.url + "/v1/embeddings", json=body).status_code == 200
