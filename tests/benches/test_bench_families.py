"""`python -m bench families` runs end to end on two tiny families (a remote-code one against its
PyTorch reference, a transformers one against sentence-transformers) and prints their rows;
numbers are not asserted, only that both sides ran and agree."""

from __future__ import annotations

import re

from . import run_bench


def test_families_bench_prints_a_row_per_family(minilm_dir):
    tiny = ["--layers", "1", "--hidden", "32", "--heads", "4", "--intermediate", "48"]
    done = run_bench(
        *("families", "--families", "nomic_bert", "llama"),
        *(*tiny, "--texts", "4", "--repeats", "1", "--sets", "short"),
        timeout=300,
    )
    rows = re.findall(
        r"^(\S+)\s+short\s+[\d.]+\s+([\d.]+)\s+([\d.]+)\s+[\d.]+x\s+([\d.]+)\s+(.+)$",
        done.stdout,
        re.MULTILINE,
    )
    assert [(r[0], r[4]) for r in rows] == [
        ("nomic_bert", "PyTorch reference (tests)"),
        ("llama", "sentence-transformers"),
    ], done.stdout
    for _, ours, theirs, cos, _ in rows:
        assert float(ours) > 0 and float(theirs) > 0 and float(cos) >= 0.9999
