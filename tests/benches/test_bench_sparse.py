"""`python -m bench sparse` runs end to end and prints its table (numbers are not asserted)."""

from __future__ import annotations

import re

from . import run_bench


def test_sparse_bench_prints_a_row_per_set(splade_dir):
    done = run_bench("sparse", "--texts", "4", "--repeats", "1", "--sets", "short", timeout=300)
    row = re.search(
        r"^short\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", done.stdout, re.MULTILINE
    )
    assert row is not None, done.stdout
    assert float(row.group(4)) > 0 and int(row.group(5)) > 0  # pairs and bytes per text
