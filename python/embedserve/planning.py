"""Cut sequences into micro-batches under a padded-token budget, longest first."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

# Padded tokens per model run. On a CPU, batches whose activations stay in cache run fastest
# (1,024 beat 16,384 by 1.3-3x on a 2-core EPYC, bench/NOTES.md); a GPU wants big batches.
CPU_MAX_BATCH_TOKENS = 1_024
GPU_MAX_BATCH_TOKENS = 16_384
# The most a budget may be: 16x the GPU default. A budget only groups rows (nothing caps rows
# per batch but it), so past the hardware's best batch it buys no speed, only memory: on a CPU
# throughput falls past ~2k (bench/NOTES.md 1), and at this ceiling one batch of the smallest
# common model (all-MiniLM-L6-v2: 12 heads, 256-token rows, 1,024 of them) already holds 3 GiB
# of attention scores per layer (tokens x heads x row length x 4 bytes); a 16-head 512-token
# model, 8 GiB. 10**9 was taken before, and one 1,500-text call grew to 7.8 GB resident.
MAX_BATCH_TOKENS = 16 * GPU_MAX_BATCH_TOKENS


CPU_PROVIDERS = ("CPUExecutionProvider", "OpenVINO:CPU")


def default_max_batch_tokens(provider: str, cpu_tokens: int = CPU_MAX_BATCH_TOKENS) -> int:
    """The budget for a session on `provider`: `cpu_tokens` (a precision's own, see
    precision.py) on a CPU, GPU_MAX_BATCH_TOKENS elsewhere."""
    return cpu_tokens if provider in CPU_PROVIDERS else GPU_MAX_BATCH_TOKENS


# `--lane-session`: off, on, or auto: on only up to LANE_AUTO_MAX_THREADS model threads, where
# the one core it keeps for interactive runs is a large share of the CPU (measured on 2:
# bench/NOTES.md), and only for graphs up to LANE_AUTO_MAX_BYTES, since the lane session loads the
# weights once more (+86 MB for all-MiniLM-L6-v2; a 2 GB model would double its memory unasked).
LANE_SESSION_MODES = ("auto", "on", "off")
LANE_AUTO_MAX_THREADS = 4
LANE_AUTO_MAX_BYTES = 512 * 2**20


def session_mode(mode: object, name: str) -> str:
    """`mode` if it is one of LANE_SESSION_MODES; else a ValueError naming the setting `name`."""
    if mode not in LANE_SESSION_MODES:
        raise ValueError(f"{name} must be one of {LANE_SESSION_MODES}, got {mode!r}")
    return str(mode)


def second_session(threads: int, mode: str, graph_bytes: int = 0, what: str = "lane") -> bool:
    """Whether a CPU model of `threads` threads whose graph takes `graph_bytes` gets a second
    session of fewer threads under `mode` (auto|on|off): the one rule for the lane session and
    the bulk session, which cost the same (the weights once more) for the same kind of gain."""
    mode = session_mode(mode, f"{what} session mode")
    if threads < 2 or mode == "off":
        return False
    return mode == "on" or (threads <= LANE_AUTO_MAX_THREADS and graph_bytes <= LANE_AUTO_MAX_BYTES)


def lane_threads(threads: int, mode: str, graph_bytes: int = 0) -> int:
    """Intra-op threads of the batch lane's own session for a CPU model of `threads` threads
    whose graph takes `graph_bytes` (0: no such session): one fewer, so that an interactive run
    beside a batch-lane run has a core to itself instead of sharing every core with it."""
    return threads - 1 if second_session(threads, mode, graph_bytes) else 0


# `bulk_session` (`--bulk-session`): a call with several micro-batches (`Engine.pooled`) runs them
# on a session of one intra-op thread from as many threads at once as the model has, instead of
# one after another on all of them: no barrier between the threads at every op. One short text
# is slower on one thread, so the model's own session keeps small calls. Measured at 2 threads
# on the reference texts (bench/NOTES.md, "The bulk session"): each concurrent run's budget is a
# quarter of the model's (BULK_BUDGET_SHARE; 256 of 1,024 padded tokens beat 512 by 10-15 % on
# calls of 8 to 32 texts, where smaller batches even out across the threads, and came within
# 2 % on 800), and a call goes wide with at least BULK_MIN_ROUNDS such batches per thread (calls
# of 4 texts, ~2.5 batches, were slower wide; of 6, faster). Above 2 threads it is not
# measured; auto keeps to the lane session's range (second_session).
BULK_BUDGET_SHARE = 4
BULK_MIN_ROUNDS = 2


def bulk_workers(threads: int, mode: str, graph_bytes: int = 0) -> int:
    """Threads that run a bulk call's batches at once on a one-thread session (0: none)."""
    return threads if second_session(threads, mode, graph_bytes, "bulk") else 0


def bulk_batch_tokens(max_batch_tokens: int) -> int:
    """The padded-token budget of each of a bulk call's concurrent one-thread runs."""
    return max(1, max_batch_tokens // BULK_BUDGET_SHARE)


def goes_wide(batches: Sequence[np.ndarray], workers: int) -> bool:
    """Whether a call's batches (planned with `bulk_batch_tokens`) are enough for `workers`."""
    return workers > 1 and len(batches) >= BULK_MIN_ROUNDS * workers


# Rows shorter than this many tokens below the batch's longest never force a new batch: for
# short sequences a little padding costs less than another model call.
PADDING_SLACK = 32


def batch_rows(lengths_desc: Sequence[int], start: int, max_batch_tokens: int) -> int:
    """How many rows from `start` (lengths sorted longest first) make the next batch.

    The batch's padded cost (longest × rows) stays under the budget, and a row that would be
    padded to more than twice its length starts the next batch instead, so one 256-token input
    does not drag sixty short ones to 256 tokens. The first row always goes in, even over budget.
    """
    longest = lengths_desc[start]
    rows = 1
    for length in itertools.islice(lengths_desc, start + 1, None):
        if longest * (rows + 1) > max_batch_tokens:
            break
        if longest > 2 * length and longest - length > PADDING_SLACK:
            break
        rows += 1
    return rows


def plan_batches(lengths: np.ndarray, max_batch_tokens: int) -> list[np.ndarray]:
    """Index groups, longest sequences first, each cut by `batch_rows`.

    Sorting means a group pads only to lengths near its own, so 2,000 mixed inputs do not all
    pad to the longest one.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    lengths_desc = np.asarray(lengths)[order].tolist()
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        rows = batch_rows(lengths_desc, start, max_batch_tokens)
        batches.append(order[start : start + rows])
        start += rows
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
