"""`python -m bench paced` end to end: a real server per variant of flags, one client at a fixed
rate, and the engine after pauses (numbers are not asserted, only that each part ran)."""

from __future__ import annotations

import json

from . import run_bench


def test_paced_bench_runs_each_variant_at_each_rate(tmp_path):
    out = tmp_path / "paced.json"
    done = run_bench(
        "paced",
        "--rates",
        "40",
        "--seconds",
        "0.5",
        "--rounds",
        "1",
        "--variant",
        "",
        "--variant",
        "--idle-spin-us 0",
        "--engine-calls",
        "5",
        "--json",
        str(out),
    )
    results = json.loads(out.read_text())
    assert set(results["servers"]) == {"", "--idle-spin-us 0"}
    for phases in results["servers"].values():
        [phase] = phases["40.0"]
        assert phase["requests"] == 20 and phase["p50_ms"] > 0 and phase["server_cores"] >= 0
    assert set(results["engine_after_pause_ms"]) == {"0.0", "25.0"}
    assert "| `--idle-spin-us 0` | 40 |" in done.stdout
