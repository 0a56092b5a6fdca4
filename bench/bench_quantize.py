"""int8/uint8/binary encodings: how often the top-k neighbours of each text stay the same.

Scores the reference texts against each other (each text a query, the others the corpus) with
float32 dot products, then with dot products of the quantized vectors, and reports recall@k of
the quantized ranking against the float one. Compares the calibrations the server could use for
int8/uint8: a fixed range for unit vectors, and per-dimension min/max calibrated on a corpus
(calibrated on one half of the texts, scored on the other half, so the ranges never saw the
texts they are judged on).

    python -m bench quantize [--vectors tests/data/all-MiniLM-L6-v2.public.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from embedserve import _core

DEFAULT_VECTORS = Path(__file__).resolve().parent.parent / "tests/data/all-MiniLM-L6-v2.public.json"


def recall_at_k(float_vectors: np.ndarray, coded: np.ndarray, k: int, l2: bool = False) -> float:
    """Mean overlap of each row's top-k neighbours (itself excluded) under both scorings: dot
    products, or (l2) minus squared Euclidean distances of the coded vectors, which is what a
    vector database indexing the bytes with an L2 metric ranks by."""
    exact = float_vectors.astype(np.float64) @ float_vectors.T.astype(np.float64)
    approx = coded @ coded.T
    if l2:
        squares = (coded * coded).sum(1)
        approx = 2 * approx - squares[:, None] - squares[None, :]
    np.fill_diagonal(exact, -np.inf)
    np.fill_diagonal(approx, -np.inf)
    hits = 0
    for row_exact, row_approx in zip(exact, approx):
        top = set(np.argsort(-row_exact, kind="stable")[:k])
        # Ties in the coarse score are broken at random, not in the float order's favour.
        order = np.lexsort((np.random.default_rng(0).random(len(row_approx)), -row_approx))
        hits += len(top & set(order[:k]))
    return hits / (k * len(exact))


def hamming_scores(bits: np.ndarray) -> np.ndarray:
    """Similarity of packed sign bits as d - 2 * hamming (equal to the dot product of ±1 vectors)."""
    unpacked = np.unpackbits(bits.view(np.uint8), axis=1).astype(np.float64) * 2 - 1
    return unpacked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench quantize", description=__doc__)
    parser.add_argument("--vectors", type=Path, default=DEFAULT_VECTORS)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)

    vectors = np.asarray(json.loads(args.vectors.read_text())["normalized"], dtype=np.float32)
    half = len(vectors) // 2
    calibration, scored = vectors[:half], vectors[half:]
    d = scored.shape[1]
    rows: list[tuple[str, float, float]] = []

    def add(name: str, coded: np.ndarray) -> None:
        coded = coded.astype(np.float64)
        rows.append(
            (name, recall_at_k(scored, coded, args.k), recall_at_k(scored, coded, args.k, l2=True))
        )

    for scale in (1.0, 0.5, 0.3, 0.2):
        lo, hi = np.full(d, -scale, np.float32), np.full(d, scale, np.float32)
        add(f"int8 fixed range [-{scale}, {scale}]", _core.quantize(scored, lo, hi, signed=True))
        add(f"uint8 fixed range [-{scale}, {scale}]", _core.quantize(scored, lo, hi, signed=False))
    lo, hi = calibration.min(0), calibration.max(0)
    add("int8 per-dimension min/max, calibrated", _core.quantize(scored, lo, hi, signed=True))
    add("uint8 per-dimension min/max, calibrated", _core.quantize(scored, lo, hi, signed=False))
    add("binary (sign bits as ±1)", hamming_scores(_core.pack_bits(scored, signed=False)))

    print(
        f"{args.vectors.name}: {len(scored)} texts scored ({half} used to calibrate), "
        f"dimension {d}, recall@{args.k} against float32"
    )
    width = max(len(name) for name, _, _ in rows)
    print(f"  {'encoding':<{width}}  dot    L2")
    for name, dot, l2 in rows:
        print(f"  {name:<{width}}  {dot:.3f}  {l2:.3f}")
    largest = float(np.abs(vectors).max())
    print(f"  largest |component| of any unit vector in the file: {largest:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
