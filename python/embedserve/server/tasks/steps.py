"""The tokenizing steps of a batch of texts, token arrays or both (TEI's mixed `inputs`), for
the tasks that take either (embed, sparse, token vectors)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from embedserve.inputs import Inputs, chunk_ranges
from embedserve.server.limits import CHUNK_CHARS


def prepare_steps(
    inputs: Inputs, prepare: Callable[[Inputs, int], None]
) -> Iterator[Callable[[], None]]:
    """A task's tokenizing steps: `prepare(part, start)` for each run of one kind (a mixed
    batch has several), a run of texts cut into bounded chunks of characters. A run of token
    arrays is one step: the cheap checks counted its ids, only their values remain to check."""
    for start, run in inputs.runs():
        if run.texts is None:
            yield lambda run=run, start=start: prepare(run, start)
            continue
        texts = run.texts
        for chunk in chunk_ranges([len(t) for t in texts], CHUNK_CHARS):
            yield lambda texts=texts, chunk=chunk, start=start: prepare(
                Inputs(texts=texts[chunk.start : chunk.stop]), start + chunk.start
            )
