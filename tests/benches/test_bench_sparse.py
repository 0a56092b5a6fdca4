"""`python -m bench sparse` runs end to end and prints its table (numbers are not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sparse_bench_prints_a_row_per_set(splade_dir):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "sparse",
            "--texts",
            "4",
            "--repeats",
            "1",
            "--sets",
            "short",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    row = re.search(
        r"^short\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", done.stdout, re.MULTILINE
    )
    assert row is not None, done.stdout
    assert float(row.group(4)) > 0 and int(row.group(5)) > 0  # pairs and bytes per text
