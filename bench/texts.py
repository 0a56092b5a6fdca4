"""Benchmark text sets of known token lengths, cut from the reference texts (real license prose)."""

from __future__ import annotations

import json
import random
from pathlib import Path

REFERENCE = (
    Path(__file__).resolve().parent.parent / "tests" / "data" / "all-MiniLM-L6-v2.public.json"
)
SETS = ("short", "medium", "long", "mix", "reference")
TARGET_TOKENS = {"short": 10, "medium": 60, "long": 250}


def reference_texts() -> list[str]:
    return json.loads(REFERENCE.read_text())["texts"]


def _words() -> list[str]:
    return " ".join(reference_texts()).split()


def _cut(words: list[str], start: int, tokens: int) -> str:
    # Prose runs ≈ 1.3 tokens a word with this tokenizer, [CLS]/[SEP] included.
    count = max(1, round((tokens - 2) / 1.3))
    return " ".join(words[start : start + count])


def make_texts(kind: str, n: int, seed: int = 0) -> list[str]:
    """`n` texts of one kind: short ≈10 tokens, medium ≈60, long ≈250, a realistic mix, or the reference."""
    rng = random.Random(seed)
    if kind == "reference":
        base = reference_texts()
        return [base[i % len(base)] for i in range(n)]
    words = _words()
    texts = []
    for _ in range(n):
        if kind == "mix":
            # Mostly short queries and medium passages, a few long documents.
            tokens = rng.choices([10, 30, 60, 120, 250], weights=[30, 25, 25, 12, 8])[0]
        else:
            tokens = TARGET_TOKENS[kind]
        start = rng.randrange(0, len(words) - 300)
        texts.append(_cut(words, start, tokens))
    return texts
