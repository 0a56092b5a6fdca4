"""The functions a sequence-classification head's logits go through, by name: shared by the
Reranker (sentence-transformers' CrossEncoder rule), the Classifier (transformers' pipeline rule)
and the config reader that maps a declared activation to one of them (models.kind)."""

from __future__ import annotations

import numpy as np

from embedserve.errors import InputError

SIGMOID = "sigmoid"
SOFTMAX = "softmax"
NONE = "none"
FUNCTIONS = (SIGMOID, SOFTMAX, NONE)


def apply_function(logits: np.ndarray, function: str) -> np.ndarray:
    """`function` of [n, labels] logits, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    if function == SIGMOID:
        return 1.0 / (1.0 + np.exp(-x))
    if function == SOFTMAX:
        shifted = np.exp(x - x.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    if function == NONE:
        return x
    raise InputError(
        f"function_to_apply must be one of {', '.join(FUNCTIONS)}, got {function!r}",
        param="function_to_apply",
    )
