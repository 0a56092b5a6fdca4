"""Overload (429), clients that hang up, models still loading or failing (503), several models."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from embedserve.server import registry as registry_module
from embedserve.server.config import ModelSpec, ServerConfig

from ..support import cosines
from ..support.gated import HELD, GatedEngine, background
from .conftest import MODEL, RawRequest, live_server, metric_samples, unhurried, wait_for
from .test_http_errors import error_of


def embed(url: str, texts, **kwargs) -> httpx.Response:
    return httpx.post(url + "/v1/embeddings", json={"model": MODEL, "input": texts}, **kwargs)


def test_a_full_queue_answers_429_at_once_with_retry_after(engine):
    gated = GatedEngine(engine)
    with live_server(unhurried(max_queue=3), engines={MODEL: gated}) as live:
        batcher = live.state.registry.models[0].batcher
        running, running_result = background(lambda: embed(live.url, [HELD], timeout=30))
        assert gated.entered.wait(10)
        queued, queued_result = background(lambda: embed(live.url, ["a", "b", "c"], timeout=30))
        wait_for(lambda: batcher.queued_inputs == 3)

        refused = embed(live.url, ["one more"], timeout=30)
        error_of(refused, 429, type="rate_limit_error", code="queue_full", param=None)
        # At once: answered while the model is still held and the three still wait, so the
        # refusal waited for no room to free (a server that queued it would not answer here).
        assert not gated.gate.is_set() and gated.forwards == []
        assert batcher.queued_inputs == 3
        assert int(refused.headers["retry-after"]) >= 1

        gated.gate.set()
        running.join(30)
        queued.join(30)
        assert running_result["value"].status_code == 200
        assert queued_result["value"].status_code == 200
        assert embed(live.url, ["room again"], timeout=30).status_code == 200


def test_a_client_that_hangs_up_has_its_queued_inputs_dropped(engine):
    gated = GatedEngine(engine)
    with live_server(unhurried(), engines={MODEL: gated}) as live:
        batcher = live.state.registry.models[0].batcher
        running, running_result = background(lambda: embed(live.url, [HELD], timeout=30))
        assert gated.entered.wait(10)

        # This client hangs up while its 5 inputs wait.
        impatient = RawRequest(
            live.url, "/v1/embeddings", {"model": MODEL, "input": ["x1", "x2", "x3", "x4", "x5"]}
        )
        wait_for(lambda: batcher.queued_inputs == 5)
        impatient.hang_up()
        wait_for(lambda: batcher.queued_inputs == 0)

        gated.gate.set()
        running.join(30)
        assert running_result["value"].status_code == 200
        assert embed(live.url, ["after"], timeout=30).status_code == 200
        assert 5 not in gated.batches  # the abandoned inputs never reached the model
        assert sorted(gated.batches) == [1, 1]
        statuses = metric_samples(
            httpx.get(live.url + "/metrics").text, "embedserve_requests_total"
        )
        assert (
            statuses['embedserve_requests_total{method="POST",route="/v1/embeddings",status="499"}']
            == 1
        )


def test_ready_is_503_while_the_model_loads(engine, monkeypatch):
    release = threading.Event()

    def slow_load(spec, **kwargs):
        assert release.wait(30)
        return engine

    monkeypatch.setattr(registry_module.Engine, "from_pretrained", staticmethod(slow_load))
    with live_server(unhurried(), wait_ready=False) as live:
        assert httpx.get(live.url + "/health").status_code == 200
        response = httpx.get(live.url + "/ready")
        error = error_of(response, 503, type="server_error", code="model_not_ready", param=None)
        assert MODEL in error["message"] and response.headers["retry-after"]
        error_of(
            embed(live.url, ["too early"]),
            503,
            type="server_error",
            code="model_not_ready",
            param=None,
        )
        assert (
            httpx.get(live.url + "/v1/models").status_code == 200
        )  # listing needs no loaded model

        release.set()
        wait_for(lambda: httpx.get(live.url + "/ready").status_code == 200)
        assert embed(live.url, ["now"]).status_code == 200


def test_a_model_that_fails_to_load_keeps_the_server_up_and_says_why():
    config = unhurried(models=(ModelSpec("/nonexistent/model/folder", alias="broken"),))
    with live_server(config, wait_ready=False) as live:
        wait_for(lambda: "Failed" in httpx.get(live.url + "/ready").text)
        error = error_of(
            httpx.get(live.url + "/ready"),
            503,
            type="server_error",
            code="model_load_failed",
            param=None,
        )
        assert "broken" in error["message"]
        response = httpx.post(live.url + "/v1/embeddings", json={"model": "broken", "input": "a"})
        error = error_of(response, 503, type="server_error", code="model_not_ready", param=None)
        assert "/nonexistent/model/folder" in error["message"]
        assert httpx.get(live.url + "/health").status_code == 200


def test_several_models_each_by_name_or_alias(engine, minilm_dir):
    config = unhurried(models=(ModelSpec(MODEL), ModelSpec(str(minilm_dir), alias="mini")))
    with live_server(config, engines={MODEL: engine, "mini": engine}) as live:
        ids = [m["id"] for m in httpx.get(live.url + "/v1/models").json()["data"]]
        assert ids == [MODEL, "mini"]
        expected = engine.embed(["hello"]).embeddings
        for name, served_as in [
            (MODEL, MODEL),
            ("mini", "mini"),
            (str(minilm_dir), "mini"),
            ("sentence-transformers/all-MiniLM-L6-v2", MODEL),
            ("ALL-MINILM-L6-V2", MODEL),
        ]:
            body = httpx.post(
                live.url + "/v1/embeddings",
                json={"model": name, "input": ["hello"], "encoding_format": "float"},
            ).json()
            assert body["model"] == served_as
            assert cosines(np.asarray([body["data"][0]["embedding"]]), expected).min() >= 0.999999
        azure = httpx.post(live.url + "/embeddings?api-version=v1", json={"input": "hello"}).json()
        assert azure["model"] == MODEL  # no model named: the first --model
        deployment = httpx.post(
            live.url + "/openai/deployments/mini/embeddings?api-version=2024-10-21",
            json={"input": "hello"},
        ).json()
        assert deployment["model"] == "mini"


def test_two_models_with_the_same_name_are_refused():
    with pytest.raises(ValueError, match="used by both"):
        ServerConfig(models=(ModelSpec(MODEL), ModelSpec("/some/folder", alias=MODEL)))
