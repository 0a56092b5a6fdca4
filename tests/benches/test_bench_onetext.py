"""`python -m bench onetext` end to end: a real server and an engine in the bench's process,
started afresh each round in alternating order, their one-text times in alternating blocks
(numbers are not asserted, only that each part ran and that the summary is the median of the
rounds it printed)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from . import ROOT, run_bench


def test_onetext_bench_alternates_engine_and_server_rounds(tmp_path):
    out = tmp_path / "onetext.json"
    done = run_bench(
        "onetext",
        "--precisions",
        "fp32",
        "--rounds",
        "2",
        "--calls",
        "6",
        "--block",
        "4",
        "--json",
        str(out),
    )
    rounds = json.loads(out.read_text())["fp32"]
    assert len(rounds) == 2
    for row in rounds:
        assert 0 < row["model_ms"] < row["p50_ms"]
        assert row["engine_ms"] > 0
        assert abs(row["ratio"] - row["p50_ms"] / row["engine_ms"]) < 1e-9
    # The rounds take turns at which side loads its model last.
    assert [row["engine_loaded_last"] for row in rounds] == [True, False]
    median = statistics.median(row["ratio"] for row in rounds)
    assert f"| **{median:.2f}** |" in done.stdout
    assert "fp32 round 1 (engine loaded last)" in done.stdout
    assert "fp32 round 2 (server loaded last)" in done.stdout
    by_order = f"engine loaded last {rounds[0]['ratio']:.2f}, with the server loaded last "
    assert by_order + f"{rounds[1]['ratio']:.2f}" in done.stdout


def test_onetext_bench_refuses_an_empty_round():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "onetext", "--calls", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "must be at least 1" in done.stderr


def test_onetext_bench_compares_two_trees_in_the_same_rounds(tmp_path):
    """`--against`: a second server from another PYTHONPATH (here the same package) takes turns
    with the first and the engine; both servers' rounds and their difference are reported."""
    import embedserve

    # Where the package this test runs is imported from: the source tree in a checkout with its
    # compiled modules copied in, site-packages after `pip install .` (the tree has none there).
    package_root = Path(embedserve.__file__).parents[1]
    out = tmp_path / "onetext.json"
    done = run_bench(
        "onetext",
        "--precisions",
        "fp32",
        "--rounds",
        "2",
        "--calls",
        "4",
        "--block",
        "2",
        "--against",
        str(package_root),
        "--json",
        str(out),
    )
    rounds = json.loads(out.read_text())["fp32"]
    assert len(rounds) == 2
    for row in rounds:
        assert 0 < row["b_model_ms"] < row["b_p50_ms"]
        assert abs(row["b_ratio"] - row["b_p50_ms"] / row["engine_ms"]) < 1e-9
    b_median = statistics.median(row["b_ratio"] for row in rounds)
    assert "| fp32 (against) |" in done.stdout and f"| **{b_median:.2f}** |" in done.stdout
    assert "fp32: p50, this tree minus against, per round (ms): " in done.stdout
