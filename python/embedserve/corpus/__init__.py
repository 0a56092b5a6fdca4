"""Embed a whole corpus into Parquet: streaming, resumable, locally, on Ray or on a server."""

from __future__ import annotations

from embedserve.corpus.encode import EMBEDDING_TYPES
from embedserve.corpus.pipeline import EmbedFileOptions, embed_file
from embedserve.corpus.readers import Columns, CorpusError, find_inputs

__all__ = [
    "EMBEDDING_TYPES",
    "Columns",
    "CorpusError",
    "EmbedFileOptions",
    "embed_file",
    "find_inputs",
]
