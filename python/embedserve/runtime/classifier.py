"""An ONNX Runtime session for a sequence classifier (a cross-encoder): ids in, [batch, labels] out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from embedserve.runtime.session import (
    SessionOptions,
    checked_inputs,
    graph_feeds,
    open_session,
)


class ClassifierSession:
    """Runs a classifier on padded int64 batches and returns its float32 [batch, labels] logits.

    Thread-safe like EncoderSession: ONNX Runtime sessions may run from several threads at once.
    """

    def __init__(self, path: Path, options: SessionOptions | None = None) -> None:
        self.path = path
        self._session = open_session(path, options or SessionOptions())
        self.provider = self._session.get_providers()[0]
        self.input_names = checked_inputs([i.name for i in self._session.get_inputs()], path)
        self.output_name, self.num_labels = _logits_output(self._session, path)

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        feeds = graph_feeds(self.input_names, input_ids, attention_mask, token_type_ids)
        (logits,) = self._session.run([self.output_name], feeds)
        return np.asarray(logits, dtype=np.float32)


def _logits_output(session: ort.InferenceSession, path: Path) -> tuple[str, int | None]:
    """The [batch, labels] output: `logits` as transformers' exporters name it, else the only 2-D one."""
    outputs = session.get_outputs()
    two_d = [o for o in outputs if len(o.shape) == 2]
    chosen = next((o for o in two_d if o.name == "logits"), two_d[0] if len(two_d) == 1 else None)
    if chosen is None:
        shapes = {o.name: o.shape for o in outputs}
        raise ValueError(
            f"{path}: no [batch, labels] output among {shapes}; a reranker's graph must end in "
            "its classifier's logits"
        )
    labels = chosen.shape[1]
    return chosen.name, labels if isinstance(labels, int) else None
