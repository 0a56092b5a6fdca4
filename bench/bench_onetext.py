"""One short text a request, back to back: the server's p50 against the engine's own one-text
time, measured side by side (issue #23's one-text goal: p50 ≤ 1.15× the engine).

    python -m bench onetext [--precisions fp32 int8] [--rounds 6] [--calls 300] [--block 20]

`bench http --concurrency 1 --texts-per-request 1` measures the engine first, then the server:
minutes apart, so a neighbour's burst in either phase moves the ratio (one int8 pair gave 1.52
and then 1.04 an hour later, the engine's median 1.32 against 1.71 ms). Here both are loaded
side by side — `embedserve serve` as a subprocess and an `Engine` with the same settings in this
process — and each round runs `--calls` one-text `embed` calls on the engine and `--calls`
requests on the server, through a blocking keep-alive client (bench/rawhttp.py's
`BlockingConnection`: no event loop's wake-up in the latencies), in alternating blocks of
`--block` (so a burst from elsewhere falls on both sides alike), on texts the other side did not
see (the cache is off in both, so every text reaches the model). Each round starts both sides
afresh, and the rounds take turns at loading the engine last or the server last: the process
that loads its model last runs it ~10 % faster (bench/NOTES.md, wave 22), which a fixed order
hands to one side. A round's ratio is its server p50 ÷ its engine median; the summary is the
median over rounds, with the median of each start order beside it. The server's own
`x-inference-time` (the model run inside the request) is printed beside it: the rest of the p50
is what the server adds around the model.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from embedserve.models import DEFAULT_MODEL

from bench.machine import describe_machine
from bench.rawhttp import BlockingConnection, post_json
from bench.serving import serve
from bench.texts import make_texts

# Between blocks: ONNX Runtime's idle threads of the side that just ran stop spinning (~25 ms)
# before the other side starts.
SETTLE_SECONDS = 0.04
# Calls on each side, after each start, before the timed ones.
WARM_UP_CALLS = 40
# Issue #23's goal: one text's p50 through the server at most this many times the engine's own.
ONE_TEXT_TARGET = 1.15


def one_round(
    engine: Any,
    urls: list[str],
    model: str,
    engine_texts: list[str],
    server_texts: list[list[str]],
    block: int,
) -> dict[str, float]:
    """Engine calls and, for each server in `urls`, requests, one text each, in alternating
    blocks of `block` (two servers take turns at going first): the medians (ms), and each
    server's median x-inference-time. The first server's keys are `p50_ms`, `model_ms` and
    `ratio`; a second's, `b_p50_ms`, `b_model_ms` and `b_ratio`."""
    connections = [BlockingConnection(url) for url in urls]
    engine_times: list[float] = []
    latencies: list[list[float]] = [[] for _ in urls]
    model_runs: list[list[float]] = [[] for _ in urls]
    try:
        for number, first in enumerate(range(0, len(engine_texts), block)):
            for text in engine_texts[first : first + block]:
                started = time.perf_counter()
                engine.embed([text])
                engine_times.append(time.perf_counter() - started)
            time.sleep(SETTLE_SECONDS)
            order = list(range(len(urls)))
            if number % 2:
                order.reverse()
            for side in order:
                for text in server_texts[side][first : first + block]:
                    body = json.dumps({"model": model, "input": text}).encode()
                    raw = post_json(urls[side], "/v1/embeddings", body)
                    started = time.perf_counter()
                    answer = connections[side].request(raw)
                    latencies[side].append(time.perf_counter() - started)
                    if answer.status != 200:
                        raise RuntimeError(
                            f"the server answered {answer.status}: {answer.body[:300]!r}"
                        )
                    model_runs[side].append(float(answer.headers["x-inference-time"]))
                time.sleep(SETTLE_SECONDS)
    finally:
        for connection in connections:
            connection.close()
    engine_ms = statistics.median(engine_times) * 1e3
    row = {"engine_ms": engine_ms}
    for side, prefix in zip(range(len(urls)), ("", "b_")):
        p50_ms = statistics.median(latencies[side]) * 1e3
        row[prefix + "p50_ms"] = p50_ms
        row[prefix + "model_ms"] = statistics.median(model_runs[side])
        row[prefix + "ratio"] = p50_ms / engine_ms
    return row


@contextlib.contextmanager
def both_sides(args: argparse.Namespace, precision: str, engine_last: bool):
    """The server(s) and an `Engine` with the same settings, freshly started, the engine loaded
    last or first: the process that loads its model last runs it ~10 % faster (bench/NOTES.md,
    wave 22), so rounds take turns and neither side keeps the advantage."""
    from embedserve.engine import Engine

    flags = ["--model", args.model, "--precision", precision, "--log-level", "warning"]
    environments = [None]
    if args.against:
        environments.append({**os.environ, "PYTHONPATH": str(args.against)})

    def load_engine() -> Any:
        return Engine.from_pretrained(args.model, precision=precision, cache_bytes=0)

    with contextlib.ExitStack() as stack:
        engine = None if engine_last else load_engine()
        urls = [stack.enter_context(serve(flags, env=env)).url for env in environments]
        if engine_last:
            engine = load_engine()
        try:
            yield engine, urls
        finally:
            del engine
            gc.collect()


def measure(args: argparse.Namespace, precision: str) -> list[dict[str, float]]:
    calls = args.calls
    sides = 2 if args.against else 1
    warm = min(WARM_UP_CALLS, calls)
    pool = make_texts("short", (sides + 1) * args.rounds * (calls + warm), seed=7)
    share = (sides + 1) * (calls + warm)
    rounds = []
    for index in range(args.rounds):
        engine_last = index % 2 == 0
        texts = pool[index * share : (index + 1) * share]
        warm_texts, texts = texts[: (sides + 1) * warm], texts[(sides + 1) * warm :]
        with both_sides(args, precision, engine_last) as (engine, urls):
            # Each side's first calls after loading are slow (first allocations, cold code).
            one_round(
                engine,
                urls,
                args.model,
                warm_texts[:warm],
                [warm_texts[(side + 1) * warm : (side + 2) * warm] for side in range(sides)],
                args.block,
            )
            row = one_round(
                engine,
                urls,
                args.model,
                texts[:calls],
                [texts[(side + 1) * calls : (side + 2) * calls] for side in range(sides)],
                args.block,
            )
        row["engine_loaded_last"] = engine_last
        rounds.append(row)
        line = (
            f"{precision} round {index + 1} ({'engine' if engine_last else 'server'} loaded "
            f"last): engine {row['engine_ms']:.3f} ms, server p50 {row['p50_ms']:.3f} ms (its "
            f"model run {row['model_ms']:.3f}), ratio {row['ratio']:.2f}"
        )
        if args.against:
            line += (
                f"; against: p50 {row['b_p50_ms']:.3f} ms (its model run "
                f"{row['b_model_ms']:.3f}), ratio {row['b_ratio']:.2f}"
            )
        print(line, flush=True)
    return rounds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench onetext", description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument(
        "--rounds", type=int, default=6, help="fresh starts; the odd ones load the engine last"
    )
    parser.add_argument("--calls", type=int, default=300, help="engine calls and requests a round")
    parser.add_argument(
        "--block", type=int, default=20, help="calls on one side before the other's turn"
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="a second server, run from this PYTHONPATH (another tree's python/), in the same "
        "rounds: two builds compared side by side. Compare them by the p50 less each one's model "
        "run: the first-started server's model runs ~10 %% slower whichever tree it is "
        "(bench/NOTES.md, wave 22)",
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    if min(args.rounds, args.calls, args.block) < 1:
        parser.error("--rounds, --calls and --block must be at least 1")
    print(describe_machine())
    results = {precision: measure(args, precision) for precision in args.precisions}
    print(
        "\n| precision | engine ms (median of rounds) | server p50 ms | server's model run ms "
        "| ratio per round | median ratio |"
    )
    print("|---|---:|---:|---:|---|---:|")
    for precision, rounds in results.items():
        engine_ms, p50_ms, model_ms, ratio = (
            statistics.median(r[key] for r in rounds)
            for key in ("engine_ms", "p50_ms", "model_ms", "ratio")
        )
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in rounds)
        print(
            f"| {precision} | {engine_ms:.3f} | {p50_ms:.3f} | {model_ms:.3f} | {ratios} "
            f"| **{ratio:.2f}** |"
        )
        by_order = {
            last: [r["ratio"] for r in rounds if r["engine_loaded_last"] == last]
            for last in (True, False)
        }
        if all(by_order.values()):
            print(
                f"{precision}: median ratio with the engine loaded last "
                f"{statistics.median(by_order[True]):.2f}, with the server loaded last "
                f"{statistics.median(by_order[False]):.2f}"
            )
        if args.against:
            b_p50_ms, b_model_ms, b_ratio = (
                statistics.median(r[key] for r in rounds)
                for key in ("b_p50_ms", "b_model_ms", "b_ratio")
            )
            b_ratios = ", ".join(f"{r['b_ratio']:.2f}" for r in rounds)
            print(
                f"| {precision} (against) | {engine_ms:.3f} | {b_p50_ms:.3f} | {b_model_ms:.3f} "
                f"| {b_ratios} | **{b_ratio:.2f}** |"
            )
            p50_gaps = [r["p50_ms"] - r["b_p50_ms"] for r in rounds]
            print(
                f"{precision}: p50, this tree minus against, per round (ms): "
                + ", ".join(f"{g:+.3f}" for g in p50_gaps)
                + f"; median {statistics.median(p50_gaps):+.3f}"
            )
            gaps = [r["p50_ms"] - r["model_ms"] - (r["b_p50_ms"] - r["b_model_ms"]) for r in rounds]
            print(
                f"{precision}: p50 less its model run, this tree minus against, per round (ms): "
                + ", ".join(f"{g:+.3f}" for g in gaps)
                + f"; median {statistics.median(gaps):+.3f}"
            )
    print(f"\nissue #23's target: median ratio <= {ONE_TEXT_TARGET}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
