"""`python -m bench floor` runs end to end: the two stand-in servers and embedserve with every
model run answered by a constant vector, a row each (numbers are not asserted)."""

from __future__ import annotations

import re

from . import run_bench


def test_floor_bench_prints_a_row_per_server():
    done = run_bench("floor", "--seconds", "0.3", "--rounds", "1", timeout=240)
    for server in ("asgi", "litestar", "embedserve"):
        row = re.search(
            rf"^\| {server} \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \| (\d+) \|$",
            done.stdout,
            re.MULTILINE,
        )
        assert row is not None, done.stdout
        assert float(row.group(1)) > 0 and int(row.group(3)) > 0  # a p50, and requests answered
