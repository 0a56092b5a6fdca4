"""Problem 4: under 10x load the server tokenized a request before deciding it had no room
(a 2,048-input request took 0.34 s to get its 429), and spent model time on clients that had
already left. Now the queue decision comes first, from the estimated wait, and a departed
client's rows never reach the model, even those already taken into a batching window."""

from __future__ import annotations

import time

import numpy as np

from ..server.conftest import RawRequest, live_server, unhurried, wait_for
from ..support.gated import HELD, GatedEngine, background, set_queued_wait
from .conftest import MODEL, embed, error_of

LONG = "the quick brown fox jumps over the lazy dog while the server keeps its queue short " * 3


def test_the_queue_decision_comes_before_tokenizing(engine):
    gated = GatedEngine(engine)
    gated.gate.set()
    with live_server(unhurried(max_wait_seconds=0.5), engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher
        assert embed(server.url, {"model": MODEL, "input": [LONG] * 64}).status_code == 200
        assert batcher.tokens_per_second is not None  # measured on that request

        gated.gate.clear()
        gated.entered.clear()
        held, _ = background(lambda: embed(server.url, {"model": MODEL, "input": HELD}))
        assert gated.entered.wait(10)
        queued = RawRequest(server.url, "/v1/embeddings", {"model": MODEL, "input": [LONG] * 2048})
        wait_for(lambda: batcher.queued_inputs == 2048)
        # 2,048 x ~60 tokens: taught to be 5 s of work, ten times the ceiling, whatever rate
        # this machine measured (a fast one could run them in under the 0.5 s).
        set_queued_wait(batcher, 5.0)

        prepares = gated.prepares
        for inputs in ([LONG] * 2048, ["one short text"]):
            refused = embed(server.url, {"model": MODEL, "input": inputs})
            error = error_of(refused, 429, "queue_full")
            assert error["type"] == "rate_limit_error"
            assert "would finish in about" in error["message"]
            retry = int(refused.headers["retry-after"])
            assert 1 <= retry <= 60
            assert retry >= min(60, int(batcher.estimated_wait() - 0.5))
        assert gated.prepares == prepares, "a refused request was tokenized"
        # With the queue over the limit for every model, even an 8 MB body is refused before
        # it is read or decoded.
        huge = embed(server.url, {"model": MODEL, "input": ["x" * 4000] * 2048})
        error_of(huge, 429, "queue_full")

        queued.hang_up()  # its client gives up: its 2,048 rows are dropped unseen
        wait_for(lambda: batcher.queued_inputs == 0)
        gated.gate.set()
        held.join(10)
        assert len(gated.forwards[-1]) == 1  # only the held request's row reached the model
        # With the queue empty again, the same big request is admitted and served.
        gated.forwards.clear()
        assert embed(server.url, {"model": MODEL, "input": [LONG] * 64}).status_code == 200


def test_a_departed_clients_rows_in_the_window_never_reach_the_model(engine):
    gated = GatedEngine(engine)
    gated.max_batch_tokens = 64  # many small batches, so one request spans a whole window
    with live_server(engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher
        texts = [f"zebra number {i} crosses the road" for i in range(40)]
        zebra = engine.tokenizer.content_ids(["zebra"])[0][0]
        left = RawRequest(server.url, "/v1/embeddings", {"model": MODEL, "input": texts})
        assert gated.entered.wait(30)  # its first batch is in the model, the rest in the window
        left.hang_up()
        wait_for(lambda: batcher.queued_inputs == 0)
        gated.gate.set()
        kept = embed(server.url, {"model": MODEL, "input": ["a client that stays"]})
        assert kept.status_code == 200, kept.text
        with_zebra = [f for f in gated.forwards if any(zebra in seq for seq in f)]
        assert len(with_zebra) == 1  # the batch that was already running, and no other
        assert len(with_zebra[0]) < len(texts)


def test_confirmed_overload_sheds_the_queued_burst_with_the_apis_429(engine):
    """A burst admitted before overload was confirmed: once it is, the queued requests that would
    finish past the target are answered 429 `queue_full` with Retry-After (OpenAI's shape), and
    the ones kept are computed, each with its own vectors. Sizes are in tokens (the detection
    level is 16 full model runs, a run 1,024 tokens), so no CPU speed enters the test."""
    gated = GatedEngine(engine)
    gated.gate.set()
    with live_server(unhurried(), engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher
        assert embed(server.url, {"model": MODEL, "input": [LONG] * 64}).status_code == 200
        assert batcher.tokens_per_second is not None

        gated.gate.clear()
        gated.entered.clear()
        held, _ = background(lambda: embed(server.url, {"model": MODEL, "input": HELD}))
        assert gated.entered.wait(10)
        # 60 requests of 8 texts (~500 tokens each, under the 3-run target alone): ~30,000
        # tokens, above the 16,384 of the detection level.
        burst = [
            background(
                lambda: embed(server.url, {"model": MODEL, "input": [LONG] * 8}, timeout=120)
            )
            for _ in range(60)
        ]
        wait_for(lambda: batcher.queued_inputs + 8 * sum(not t.is_alive() for t, _ in burst) == 480)
        confirming = None
        # Where sending the burst took longer than a target interval (a slow machine), its own
        # tail confirmed the standing queue and shed the rest; else one more arrival does.
        if not batcher.policy.overloaded:
            time.sleep(batcher.policy.target + 0.05)  # the standing queue has lasted an interval
            # The arrival that confirms overload; itself admitted if it fits after the shedding.
            confirming, confirmed = background(
                lambda: embed(server.url, {"model": MODEL, "input": "."})
            )
        wait_for(lambda: batcher.policy.overloaded)
        # The shed requests are answered now, while the model is still held.
        wait_for(lambda: any(not t.is_alive() for t, _ in burst))
        assert all(out["value"].status_code == 429 for t, out in burst if not t.is_alive())

        gated.gate.set()
        held.join(30)
        if confirming is not None:
            confirming.join(30)
            assert confirmed["value"].status_code in (200, 429)
        answers = []
        for thread, out in burst:
            thread.join(60)
            answers.append(out["value"])
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 429}, statuses
        # Kept: about a target's worth (3 model runs, at least 0.1 s of work), the rest shed.
        assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
        want = engine.embed([LONG]).embeddings[0]
        for answer in answers:
            if answer.status_code == 429:
                error = error_of(answer, 429, "queue_full")
                assert error["type"] == "rate_limit_error" and "finish in about" in error["message"]
                assert 1 <= int(answer.headers["retry-after"]) <= 60
            else:
                data = answer.json()["data"]
                assert [d["index"] for d in data] == list(range(8))
                got = np.asarray([d["embedding"] for d in data], np.float32)
                assert (got @ want).min() >= 0.99999
