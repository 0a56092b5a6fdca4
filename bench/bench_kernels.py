"""embedserve._core kernels against the NumPy / stdlib way of doing the same thing.

    python -m bench kernels [--repeats 7] [--only pool json]
    python -m bench.bench_kernels --help

Each row times one kernel and one baseline (median of --repeats timeit repeats, each repeat
looping enough calls to last >= 0.2 s unless --quick), after checking that both give the same
result. Speedup = baseline ms / C++ ms. JSON baselines: orjson (OPT_SERIALIZE_NUMPY, which also
writes float32 via its shortest repr), json.dumps(arr.tolist()) and msgspec on the list; the
optional ones are skipped with a note when not installed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import timeit
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from embedserve import _core

GROUPS = ("pool", "normalize", "base64", "json")


@dataclass
class Row:
    kernel: str
    shape: str
    cpp_ms: float
    baseline: str
    baseline_ms: float

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.cpp_ms


class Timer:
    def __init__(self, repeats: int, quick: bool) -> None:
        self.repeats = repeats
        self.quick = quick

    def ms(self, fn: Callable[[], object]) -> float:
        """Median milliseconds per call, timeit-style (autorange'd loop count per repeat)."""
        timer = timeit.Timer(fn)
        number = 1 if self.quick else timer.autorange()[0]
        return statistics.median(timer.repeat(repeat=self.repeats, number=number)) / number * 1e3


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(f"outputs differ: {what}")


def realistic_mask(rng: np.random.Generator, batch: int, seq: int) -> np.ndarray:
    """Right-padded attention mask with lengths spread over 8..seq, as a tokenizer pads."""
    lengths = rng.integers(min(8, seq), seq + 1, size=batch)
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)


# -- NumPy baselines ---------------------------------------------------------------------------


def numpy_mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' mean pooling in NumPy, float32 throughout."""
    h = hidden.astype(np.float32, copy=False)
    m = mask[:, :, None].astype(np.float32)
    return (h * m).sum(1) / np.maximum(m.sum(1), np.float32(1e-9))


def numpy_cls(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return hidden[:, 0].astype(np.float32)


def numpy_last(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    present = mask != 0
    last = mask.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
    out = hidden[np.arange(hidden.shape[0]), last].astype(np.float32)
    out[~present.any(1)] = 0.0
    return out


NUMPY_POOL = {"mean": numpy_mean, "cls": numpy_cls, "last": numpy_last}


def numpy_cut_and_normalize(x: np.ndarray, k: int) -> np.ndarray:
    cut = x[:, :k]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), np.float32(1e-12))


def numpy_cut_and_normalize_(x: np.ndarray, k: int) -> np.ndarray:
    cut = x[:, :k]
    cut /= np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), np.float32(1e-12))
    return cut


# -- groups ------------------------------------------------------------------------------------


def bench_pool(timer: Timer, rng: np.random.Generator, shape: tuple[int, int, int]) -> list[Row]:
    batch, seq, _ = shape
    mask = realistic_mask(rng, batch, seq)
    hidden32 = rng.standard_normal(shape, dtype=np.float32)
    rows = []
    for hidden in (hidden32, hidden32.astype(np.float16)):
        dtype = np.dtype(hidden.dtype).name
        for mode, baseline in NUMPY_POOL.items():
            got, want = _core.pool(hidden, mask, mode), baseline(hidden, mask)
            if mode == "mean":
                check(np.allclose(got, want, rtol=1e-5, atol=1e-6), f"pool {mode} {dtype}")
            else:
                check(np.array_equal(got, want), f"pool {mode} {dtype}")
            rows.append(
                Row(
                    f"pool {mode} {dtype}",
                    "x".join(map(str, shape)),
                    timer.ms(lambda h=hidden, m=mode: _core.pool(h, mask, m)),
                    f"numpy {mode}",
                    timer.ms(lambda h=hidden, f=baseline: f(h, mask)),
                )
            )
    return rows


def bench_normalize(timer: Timer, x: np.ndarray) -> list[Row]:
    n, d = x.shape
    rows = []
    for k in (d, d // 2):
        got, want = _core.cut_and_normalize(x, k), numpy_cut_and_normalize(x, k)
        check(np.allclose(got, want, rtol=1e-6, atol=1e-7), f"cut_and_normalize k={k}")
        rows.append(
            Row(
                f"cut_and_normalize k={k}",
                f"{n}x{d}",
                timer.ms(lambda k=k: _core.cut_and_normalize(x, k)),
                "numpy norm+divide",
                timer.ms(lambda k=k: numpy_cut_and_normalize(x, k)),
            )
        )
    # In place: repeats re-normalise unit rows, which costs the same as the first pass.
    mine, theirs = x.copy(), x.copy()
    got, want = _core.cut_and_normalize_(mine), numpy_cut_and_normalize_(theirs, d)
    check(np.allclose(got, want, rtol=1e-6, atol=1e-7), "cut_and_normalize_")
    rows.append(
        Row(
            "cut_and_normalize_ (in place)",
            f"{n}x{d}",
            timer.ms(lambda: _core.cut_and_normalize_(mine)),
            "numpy in-place /=",
            timer.ms(lambda: numpy_cut_and_normalize_(theirs, d)),
        )
    )
    return rows


def python_base64(x: np.ndarray) -> list[str]:
    return [base64.b64encode(row.tobytes()).decode() for row in x]


def bench_base64(timer: Timer, x: np.ndarray) -> list[Row]:
    check(_core.encode_base64(x) == python_base64(x), "encode_base64")
    return [
        Row(
            "encode_base64",
            "x".join(map(str, x.shape)),
            timer.ms(lambda: _core.encode_base64(x)),
            "base64.b64encode per row",
            timer.ms(lambda: python_base64(x)),
        )
    ]


def bench_json(timer: Timer, x: np.ndarray, notes: list[str]) -> list[Row]:
    def same(values: object) -> bool:
        return np.array_equal(np.asarray(values, dtype=np.float64).astype(np.float32), x)

    texts = _core.encode_json(x)
    check(same([json.loads(t) for t in texts]), "encode_json")
    shape = "x".join(map(str, x.shape))
    cpp_ms = timer.ms(lambda: _core.encode_json(x))
    size = sum(map(len, texts))
    rows = []

    baselines: list[tuple[str, Callable[[], object], Callable[[object], object]]] = []
    try:
        import orjson

        baselines.append(
            (
                "orjson.dumps(numpy)",
                lambda: orjson.dumps(x, option=orjson.OPT_SERIALIZE_NUMPY),
                orjson.loads,
            )
        )
    except ImportError:
        notes.append("orjson not installed: its row skipped (pip install '.[bench]')")
    baselines.append(("json.dumps(tolist())", lambda: json.dumps(x.tolist()), json.loads))
    try:
        import msgspec

        baselines.append(
            (
                "msgspec.json.encode(tolist())",
                lambda: msgspec.json.encode(x.tolist()),
                msgspec.json.decode,
            )
        )
    except ImportError:
        notes.append("msgspec not installed: its row skipped (pip install '.[bench]')")

    for name, encode, decode in baselines:
        out = encode()
        check(same(decode(out)), name)
        rows.append(Row("encode_json", shape, cpp_ms, name, timer.ms(encode)))
        notes.append(f"{name} on {shape}: {len(out):,} bytes (encode_json rows: {size:,} chars)")
    return rows


# -- driver ------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    header = ("kernel", "shape", "C++ ms", "baseline", "baseline ms", "speedup")
    cells = [header] + [
        (
            r.kernel,
            r.shape,
            f"{r.cpp_ms:.3f}",
            r.baseline,
            f"{r.baseline_ms:.3f}",
            f"{r.speedup:.1f}x",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    right = {2, 4, 5}

    def line(row: tuple[str, ...]) -> str:
        return " | ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        )

    print(line(header))
    print("-+-".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench kernels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=7, help="timeit repeats (median)")
    parser.add_argument("--quick", action="store_true", help="one call per repeat")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--rows", type=int, default=2048, help="rows of the [n, d] matrices")
    parser.add_argument("--dims", nargs="+", type=int, default=[384, 1024])
    parser.add_argument(
        "--pool-shape", nargs=3, type=int, default=[256, 128, 384], metavar=("BATCH", "SEQ", "DIM")
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    timer = Timer(args.repeats, args.quick)
    rng = np.random.default_rng(args.seed)
    rows: list[Row] = []
    notes: list[str] = []
    if "pool" in args.only:
        rows += bench_pool(timer, rng, tuple(args.pool_shape))
    for d in args.dims:
        raw = rng.standard_normal((args.rows, d), dtype=np.float32)
        unit = _core.cut_and_normalize(raw)  # what base64/JSON encode in practice
        if "normalize" in args.only:
            rows += bench_normalize(timer, raw)
        if "base64" in args.only:
            rows += bench_base64(timer, unit)
        if "json" in args.only:
            rows += bench_json(timer, unit, notes)

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; median of {args.repeats} repeats; "
        "all outputs checked equal"
    )
    print_table(rows)
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
