"""Cut sequences into micro-batches under a padded-token budget, longest first."""

from __future__ import annotations

import numpy as np


def plan_batches(lengths: np.ndarray, max_batch_tokens: int, max_batch_size: int | None = None) -> list[np.ndarray]:
    """Index groups, longest sequences first; each group's padded cost (longest × count) fits the budget.

    Sorting means a group pads only to lengths near its own, so 2,000 mixed inputs do not all
    pad to the longest one. A single sequence longer than the budget still gets a group of its own.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        fit = max(1, max_batch_tokens // max(longest, 1))
        if max_batch_size:
            fit = min(fit, max_batch_size)
        batches.append(order[start:start + fit])
        start += fit
    return batches


def pad_batch(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """input_ids, attention_mask, token_type_ids for one batch, padded on the right with 0."""
    longest = max(len(s) for s in sequences)
    ids = np.zeros((len(sequences), longest), dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask, np.zeros_like(ids)
