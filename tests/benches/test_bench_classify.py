"""`python -m bench classify` runs both of its tasks end to end and prints their tables."""

from __future__ import annotations

import pytest

from . import run_bench


@pytest.mark.parametrize(
    ("task", "size", "column"), [("classify", "--texts", "texts"), ("yes-no", "--docs", "pairs")]
)
def test_bench_classify_prints_a_row_per_set(task, size, column):
    done = run_bench(
        *("classify", "--task", task, size, "4", "--repeats", "1"),
        *("--sets", "short", "medium", "--no-baseline", "--threads", "1"),
        timeout=600,
    )
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("set"))
    assert column in lines[header]
    rows = [line.split() for line in lines[header + 1 :]]
    assert [row[0] for row in rows] == ["short", "medium"]
    assert all(float(row[3]) > 0 for row in rows)
