"""What the tasks whose rows are built chunk by chunk share (pairs, classified texts, token
vectors, MaxSim): the rows, their usage (every token the model sees, specials and truncation
counted) and the content tokens each chunk adds as it is tokenized.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Generic, TypeVar

from embedserve.server.pipeline import Job

R = TypeVar("R")
# A model input: a `Pair`, or a token-ids sequence (`preparing.TokenIds`); its length is its tokens.
Row = TypeVar("Row", bound=Sized)


class RowsJob(Job[R], Generic[Row, R]):
    """A job whose steps append to `_rows` and add to `_content`."""

    def __init__(self) -> None:
        self._rows: list[Row] = []
        self._content = 0

    def rows(self) -> list[Row]:
        return self._rows

    @property
    def usage_tokens(self) -> int:
        return sum(len(row) for row in self._rows)

    @property
    def content_tokens(self) -> int:
        return self._content
