"""`embedserve serve --model all-MiniLM-L6-v2 --model ./cross-encoder=reranker` serves both kinds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from embedserve.cli import _parser
from embedserve.reranker import Reranker
from embedserve.server.cli import config_from_args

from tests.support import free_port, stop, wait_ready

from .conftest import MODEL


def test_max_documents_flag():
    args = _parser().parse_args(["serve", "--max-documents", "64"])
    assert config_from_args(args, {}).limits.max_documents == 64
    assert config_from_args(_parser().parse_args(["serve"]), {}).limits.max_documents == 1000


def test_serve_an_embedder_and_a_reranker(engine, cross_encoder_dirs, tmp_path: Path):
    folder = cross_encoder_dirs["bert"][0]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedserve.cli",
            "serve",
            "--port",
            str(port),
            "--model",
            MODEL,
            "--model",
            f"{folder}=reranker",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    try:
        wait_ready(process, url, Path(log.name))
        documents = ["a cat sat on the mat", "stock prices fell sharply", "kittens and cats"]
        ranked = httpx.post(
            url + "/v1/rerank", json={"model": "reranker", "query": "cats", "documents": documents}
        ).json()
        want = Reranker.from_pretrained(folder).rank("cats", documents)
        assert [r["index"] for r in ranked["results"]] == [r.index for r in want]
        np.testing.assert_allclose(
            [r["relevance_score"] for r in ranked["results"]], [r.score for r in want], atol=1e-6
        )
        embedded = httpx.post(url + "/v1/embeddings", json={"model": MODEL, "input": ["cats"]})
        np.testing.assert_allclose(
            [embedded.json()["data"][0]["embedding"]], engine.embed(["cats"]).embeddings, atol=1e-6
        )
        models = [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]]
        assert models == [MODEL, "reranker"]
    finally:
        stop(process)
        log.close()
