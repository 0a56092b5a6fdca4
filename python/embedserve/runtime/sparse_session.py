"""An ONNX Runtime session for a SPLADE graph (models.sparse_heads): ids in, only the non-zero
(row, token id, value) triples of the pooled [batch, vocab] matrix out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedserve.models.sparse_heads import SPARSE_INDICES, SPARSE_VALUES
from embedserve.runtime.session import SessionOptions, checked_inputs, graph_feeds, open_session


class SparseSession:
    """Thread-safe like EncoderSession: ONNX Runtime sessions may run from several threads."""

    def __init__(self, path: Path, options: SessionOptions | None = None) -> None:
        self.path = path
        self._session = open_session(path, options or SessionOptions())
        self.provider = self._session.get_providers()[0]
        self.input_names = checked_inputs([i.name for i in self._session.get_inputs()], path)
        outputs = {o.name for o in self._session.get_outputs()}
        if not {SPARSE_INDICES, SPARSE_VALUES} <= outputs:
            raise ValueError(
                f"{path}: outputs {sorted(outputs)}; a SPLADE graph ends in {SPARSE_INDICES} and "
                f"{SPARSE_VALUES} (compile the model's safetensors)"
            )

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, token ids, values) of the non-zero entries, in row-major order."""
        feeds = graph_feeds(self.input_names, input_ids, attention_mask, token_type_ids)
        where, values = self._session.run([SPARSE_INDICES, SPARSE_VALUES], feeds)
        return where[0], where[1], np.asarray(values, dtype=np.float32)
