"""An LLM reranker over HTTP: the cohere SDK against a Qwen3-Reranker-style model, `instruction`
per request on the Cohere, TEI and score routes, held to the model card's scores."""

from __future__ import annotations

import cohere
import httpx
import numpy as np
import pytest
from embedserve.reranker import Reranker
from embedserve.server.config import ModelSpec

from ..support.cross_encoders import QUERIES
from ..test_llm_rerankers import SCORE_ATOL, card_scores, decoder
from .conftest import KEY, MODEL, live_server, unhurried


@pytest.fixture(scope="module")
def documents(reference) -> list[str]:
    return list(dict.fromkeys(reference["texts"][3::6]))


def test_cohere_sdk_and_score_route_with_an_instruction(tmp_path, minilm_dir, documents, engine):
    """The cohere SDK against a yes/no reranker, an `instruction` per request on each route, and
    a cross-encoder that refuses one."""
    folder = decoder(tmp_path / "q3", minilm_dir, "qwen3", "CausalLM", tied=True, seed=6)
    reranker = Reranker.from_pretrained(folder, name="judge")
    config = unhurried(models=(ModelSpec(MODEL), ModelSpec(str(folder), "judge")), api_keys=(KEY,))
    custom = "Given a legal question, find the clause that answers it"
    with (
        live_server(config, engines={MODEL: engine, "judge": reranker}) as live,
        httpx.Client(timeout=60) as http,
    ):
        client = cohere.ClientV2(api_key=KEY, base_url=live.url, httpx_client=http)
        response = client.rerank(model="judge", query=QUERIES[1], documents=documents, top_n=5)
        want = card_scores(folder, [(QUERIES[1], d) for d in documents])
        assert [r.index for r in response.results] == list(np.argsort(-want, kind="stable"))[:5]
        np.testing.assert_allclose(
            [r.relevance_score for r in response.results], np.sort(want)[::-1][:5], atol=SCORE_ATOL
        )
        headers = {"Authorization": f"Bearer {KEY}"}
        body = {"model": "judge", "text_1": QUERIES[1], "text_2": documents[:4]}
        scored = http.post(
            live.url + "/v1/score", json={**body, "instruction": custom}, headers=headers
        )
        assert scored.status_code == 200, scored.text
        np.testing.assert_allclose(
            [d["score"][1] for d in scored.json()["data"]],
            card_scores(folder, [(QUERIES[1], d) for d in documents[:4]], custom),
            atol=SCORE_ATOL,
        )
        tei = http.post(
            live.url + "/rerank",
            json={"query": QUERIES[1], "texts": documents[:4], "instruction": custom},
            headers=headers,
        )
        assert tei.status_code == 200, tei.text
        refused = http.post(
            live.url + "/v1/embeddings",
            json={"model": "judge", "input": "x"},
            headers=headers,
        )
        assert refused.status_code == 400
        # /predict: pairs are judged, a text alone is refused (TEI's shape).
        pair = http.post(
            live.url + "/predict",
            json={"model": "judge", "inputs": [QUERIES[1], documents[0]]},
            headers=headers,
        )
        assert pair.status_code == 200, pair.text
        assert pair.json()[0]["label"] in ("yes", "no")
        alone = http.post(
            live.url + "/predict", json={"model": "judge", "inputs": "a text"}, headers=headers
        )
        # TEI's Backend status for a model that cannot do the route's task.
        assert alone.status_code == 424 and "LLM reranker" in alone.json()["error"]
        texts = http.post(
            live.url + "/v1/classify", json={"model": "judge", "input": "a text"}, headers=headers
        )
        error = texts.json()["error"]
        assert texts.status_code == 400 and error["code"] == "wrong_model_kind", error
        assert "`judge` is an LLM reranker" in error["message"] and error["param"] == "input"
