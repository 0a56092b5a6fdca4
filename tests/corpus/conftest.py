from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="session")
def engine(minilm_dir: Path):
    from embedserve.engine import Engine

    return Engine.from_pretrained(minilm_dir, name="all-MiniLM-L6-v2", providers="cpu")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_csv(path: Path, records: list[dict], fields: tuple[str, ...] = ("id", "text")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(records)
    return path


def write_parquet(path: Path, records: list[dict], row_group_size: int = 16) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)
    return path


def read_output(out: Path) -> tuple[list[int], list[str | None], np.ndarray]:
    table = pq.read_table(out)
    vectors = (
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
        if table.num_rows
        else None
    )
    return table.column("row").to_pylist(), table.column("id").to_pylist(), vectors
