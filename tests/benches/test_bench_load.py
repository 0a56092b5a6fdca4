"""`python -m bench overload --task rerank` and `soak --rerank-share` end to end: a real server on
loopback serving a tiny random cross-encoder, phases of a second or two."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from bench import bench_soak

from ..support.cross_encoders import bert_cross_encoder
from . import run_bench


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory, minilm_dir) -> Path:
    return bert_cross_encoder(tmp_path_factory.mktemp("bench-load") / "bert", minilm_dir)


def test_overload_sends_reranks_and_counts_pairs(tiny_reranker, tmp_path):
    out = tmp_path / "phases.json"
    done = run_bench(
        "overload",
        "--task",
        "rerank",
        "--reranker",
        str(tiny_reranker),
        "--seconds",
        "2",
        "--warm-up",
        "1",
        "--base-clients",
        "2",
        "--texts",
        "4",
        "--multipliers",
        "2",
        "--json",
        str(out),
    )
    assert "to /v1/rerank" in done.stdout and "goodput pairs/s" in done.stdout
    [phases] = json.loads(out.read_text())
    assert [p["name"] for p in phases] == ["capacity", "2x"]
    for phase in phases:
        # Every 200 held one relevance score per document (a wrong count lands in `other`).
        assert phase["ok_items"] == 4 * len(phase["ok"]) > 0, phase
        assert phase["server_errors"] == 0 and phase["other"] == {}, phase
        assert phase["sent"] >= len(phase["ok"]) + len(phase["refused"])
    assert re.search(r"^\| 2x \| 4 \| [\d.]+ \| \d+ % \|", done.stdout, re.MULTILINE), done.stdout


def test_soak_mixes_rerank_traffic_and_counts_5xx(tiny_reranker):
    done = run_bench(
        "soak",
        "--minutes",
        "0.05",  # 3 s: two closed-loop clients get dozens of answers from the tiny reranker
        "--clients",
        "2",
        "--rerank-share",
        "1",
        "--reranker",
        str(tiny_reranker),
        "--",
        "--header-timeout-seconds",
        "2",  # a partial-headers client waits no longer than that
    )
    answers = ast.literal_eval(
        re.search(r"^answers: (\{.*\})$", done.stdout, re.MULTILINE).group(1)
    )
    # A share of 1 sends every request to the rerank routes, and the valid ones are answered.
    assert answers.get("rerank 200", 0) > 0, answers
    assert not [k for k in answers if not k.startswith("rerank ")], answers
    assert "5xx answers: 0" in done.stdout and done.stdout.rstrip().endswith("PASS")


def test_soak_refuses_a_share_outside_zero_to_one(capsys):
    with pytest.raises(SystemExit) as exited:
        bench_soak.main(["--rerank-share", "1.5"])
    assert exited.value.code == 2
    assert "--rerank-share must be between 0 and 1, not 1.5" in capsys.readouterr().err


def test_overload_mixed_runs_interactive_beside_a_batch_flood(tmp_path):
    out = tmp_path / "mixed.json"
    done = run_bench(
        "overload",
        "--mixed",
        "--seconds",
        "2",
        "--warm-up",
        "1",
        "--batch-clients",
        "2",
        "--batch-texts",
        "4",
        "--json",
        str(out),
    )
    [phases] = json.loads(out.read_text())
    names = [p["name"] for p in phases]
    assert names == [
        "interactive alone",
        "interactive + flood with X-Priority: batch",
        "flood with X-Priority: batch",
        "interactive + flood without the header",
        "flood without the header",
    ]
    for phase in phases:
        assert phase["server_errors"] == 0 and phase["other"] == {}, phase
        assert phase["ok"], phase  # interactive and batch clients were both answered
    assert "| interactive + flood with X-Priority: batch | 1 |" in done.stdout
