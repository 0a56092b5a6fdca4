"""The live progress bar (documents/s, tokens/s, ETA, skipped) and the summary at the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from embedserve.corpus.output import Chunk


class Progress:
    """A tqdm bar over input rows; `quiet` keeps only the summary (for logs)."""

    def __init__(self, total: int, done: int, *, quiet: bool, stream: TextIO | None = None) -> None:
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.rows = 0
        self.tokens = 0
        self.skipped = 0
        self._bar = tqdm(
            total=total,
            initial=done,
            unit="doc",
            disable=quiet,
            file=self.stream,
            dynamic_ncols=True,
            smoothing=0.1,
            mininterval=0.5,
        )

    def update(self, chunk: Chunk) -> None:
        self.rows += len(chunk.rows)
        self.tokens += chunk.tokens
        self.skipped += len(chunk.skipped)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self._bar.set_postfix_str(
            f"{self.tokens / elapsed:,.0f} tok/s, skipped {self.skipped}", refresh=False
        )
        self._bar.update(chunk.end - chunk.start)

    def close(self) -> None:
        self._bar.close()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def summary(
    totals: dict[str, Any],
    *,
    out: str,
    this_run_rows: int,
    this_run_tokens: int,
    seconds: float,
    resumed_from: int,
    place: Callable[[int], str],
    show_skipped: int = 20,
    cache: tuple[int, int, str] | None = None,
) -> str:
    """A few lines for the end of a run: counts, speeds of this run, the disk cache's (hits,
    misses, folder) when there is one, and the first skipped rows, each as `place` (the run's
    `pipeline.input_row`) names it: its number and its file's line."""
    lines = [
        (
            f"embedded {totals['rows']:,} rows ({totals['tokens']:,} tokens) into {out} "
            f"({totals['parts']} parts); skipped {totals['skipped']:,}"
        )
    ]
    if resumed_from:
        lines.append(f"resumed at row {resumed_from:,}")
    if seconds > 0 and this_run_rows:
        lines.append(
            f"this run: {this_run_rows:,} rows in {seconds:.1f} s, "
            f"{this_run_rows / seconds:,.1f} docs/s, {this_run_tokens / seconds:,.0f} tokens/s"
        )
    if cache is not None:
        hits, misses, folder = cache
        lines.append(f"disk cache {folder}: {hits:,} hits, {misses:,} misses")
    skipped = totals["skipped_rows"]
    for row, reason in skipped[:show_skipped]:
        lines.append(f"  skipped {place(row)}: {reason}")
    if totals["skipped"] > min(len(skipped), show_skipped):
        lines.append(
            f"  ... {totals['skipped'] - min(len(skipped), show_skipped):,} more "
            f"(listed per part in {out}/_manifest.json)"
        )
    return "\n".join(lines)
