"""Memory stays flat as the corpus grows: in one process, a 2,000-row run (100+ MiB of text in and
vectors out) raises the peak RSS of a 500-row run by less than a 32 MiB budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

PAD = "x" * 65536  # an extra field per row: the reader parses it and must not keep it

# Embeds the small corpus, then the large one, in a fresh process with one engine, and prints
# the peak resident memory (VmHWM, KiB) after each.
SCRIPT = """
import sys
from embedserve.corpus import EmbedFileOptions, embed_file
from embedserve.engine import Engine
engine = Engine.from_pretrained(sys.argv[1], providers="cpu")
options = EmbedFileOptions(batch_texts=64, rows_per_part=512, quiet=True)
for corpus, out in zip(sys.argv[2::2], sys.argv[3::2]):
    embed_file(corpus, out, options, engine=engine, log=None)
    status = open("/proc/self/status").read()
    print([line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")][0])
"""


def _corpus(path: Path, rows: int) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"id": i, "text": f"row {i} of the corpus", "pad": PAD}) + "\n"
            for i in range(rows)
        )
    return path


def test_peak_memory_does_not_grow_with_the_corpus(tmp_path, minilm_dir):
    small = _corpus(tmp_path / "small.jsonl", 500)
    large = _corpus(tmp_path / "large.jsonl", 2_000)
    budget_mib = 32
    corpus_mib = (large.stat().st_size + 2_000 * 384 * 4) / 2**20  # text in + vectors out
    assert corpus_mib > 3 * budget_mib
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(minilm_dir),
            str(small),
            str(tmp_path / "small-out"),
            str(large),
            str(tmp_path / "large-out"),
        ],
        capture_output=True,
        text=True,
        timeout=170,
        check=True,
    )
    small_peak, large_peak = (int(v) / 1024 for v in done.stdout.split()[-2:])
    print(
        f"peak RSS {small_peak:.0f} MiB after 500 rows, {large_peak:.0f} MiB after 2,000 more "
        f"({corpus_mib:.0f} MiB in and out)"
    )
    assert large_peak - small_peak < budget_mib
    assert pq.read_table(tmp_path / "large-out").num_rows == 2_000
