"""Overload: capacity, then goodput at 2x/5x/10x offered load, with `Retry-After` honoured.

    python -m bench overload [--seconds 30] [--base-clients 32] [--texts 8] [--timeout 15]

1. Capacity: `--base-clients` closed-loop clients, each sending `--texts` short texts per request
   back to back for `--seconds`: texts/s answered 200, and the latency p50/p99 ("unloaded" in
   the goals below: the server is busy but not overloaded).
2. For each multiplier M: M x base clients, closed loop, each request with a client timeout of
   `--timeout` s; a 429 makes that client sleep `Retry-After` seconds before its next request.
   Goodput = texts/s answered 200 within the timeout. A prober reads GET /health every 100 ms.

Goals (issue #7): at 10x, goodput >= 80 % of capacity, admitted p99 <= 3x the capacity run's
p99, /health p99 < 100 ms, and every 429 answered in < 5 ms (server side; the client's view is
shown, on the same cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from bench.rawhttp import Connection, post_json, prober, run
from bench.serving import serve
from bench.texts import make_texts

MODEL = "all-MiniLM-L6-v2"


@dataclass
class Phase:
    name: str
    clients: int
    seconds: float = 0.0
    ok_texts: int = 0
    ok: list[float] = field(default_factory=list)  # latency of 200s, s
    refused: list[float] = field(default_factory=list)  # latency of 429s, s
    timeouts: int = 0
    other: dict[str, int] = field(default_factory=dict)
    health: list[float] = field(default_factory=list)

    @property
    def goodput(self) -> float:
        return self.ok_texts / self.seconds if self.seconds else 0.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3 if values else float("nan")


async def run_phase(
    url: str, phase: Phase, texts: list[str], per_request: int, seconds: float, timeout: float
) -> Phase:
    stop = time.monotonic() + seconds

    async def one_client(seed: int) -> None:
        connection = Connection(url)
        index = seed * per_request
        while time.monotonic() < stop:
            batch = [texts[(index + i) % len(texts)] for i in range(per_request)]
            index += per_request * phase.clients
            raw = post_json(
                url, "/v1/embeddings", json.dumps({"model": MODEL, "input": batch}).encode()
            )
            sent = time.monotonic()
            try:
                # The timeout is the client's patience for the whole request; a client that
                # gives up hangs up, as a real one would.
                answer = await asyncio.wait_for(connection.request(raw), timeout)
            except asyncio.TimeoutError:
                connection.close()
                phase.timeouts += 1
                continue
            except (OSError, asyncio.IncompleteReadError) as exc:
                key = type(exc).__name__
                phase.other[key] = phase.other.get(key, 0) + 1
                await asyncio.sleep(0.1)
                continue
            took = time.monotonic() - sent
            if answer.status == 200:
                if time.monotonic() <= stop + timeout:
                    phase.ok.append(took)
                    phase.ok_texts += per_request
            elif answer.status == 429:
                phase.refused.append(took)
                retry = float(answer.headers.get("retry-after", "1"))
                await asyncio.sleep(min(retry, max(0.0, stop - time.monotonic())))
            else:
                key = str(answer.status)
                phase.other[key] = phase.other.get(key, 0) + 1
        connection.close()

    started = time.monotonic()
    with prober(url, seconds) as health:
        await asyncio.gather(*(one_client(i) for i in range(phase.clients)))
        phase.seconds = min(time.monotonic(), stop) - started
    phase.health = health
    return phase


def measure_round(url: str, args: argparse.Namespace, texts: list[str]) -> list[Phase]:
    """Capacity, then each multiplier, on a warm server."""
    capacity = run(
        lambda: run_phase(
            url, Phase("capacity", args.base_clients), texts, args.texts, args.seconds, 60
        )
    )
    phases = [capacity]
    for m in args.multipliers:
        phase = Phase(f"{m}x", args.base_clients * m)
        phases.append(
            run(
                lambda phase=phase: run_phase(
                    url, phase, texts, args.texts, args.seconds, args.timeout
                )
            )
        )
    return phases


def print_table(phases: list[Phase]) -> None:
    base = phases[0].goodput
    print(
        "| load | clients | goodput texts/s | % of capacity | 200 p50 ms | 200 p99 ms | "
        "p99 / capacity p99 | 429s | 429 p50 ms | 429 p99 ms | timeouts | other | "
        "/health p99 ms |"
    )
    print("|---" * 13 + "|")
    for p in phases:
        print(
            f"| {p.name} | {p.clients} | {p.goodput:.1f} | {100 * p.goodput / base:.0f} % | "
            f"{pct(p.ok, 50):.0f} | {pct(p.ok, 99):.0f} | "
            f"{pct(p.ok, 99) / pct(phases[0].ok, 99):.2f} | {len(p.refused)} | "
            f"{pct(p.refused, 50):.1f} | {pct(p.refused, 99):.1f} | {p.timeouts} | "
            f"{p.other or '-'} | {pct(p.health, 99):.1f} |"
        )


def print_medians(rounds: list[list[Phase]]) -> None:
    """Per load: the median over rounds of each ratio and percentile (each round is its own
    baseline: goodput is divided by the same round's capacity)."""
    print(
        f"\nmedians of {len(rounds)} rounds: | load | % of capacity | p99 / capacity p99 | "
        "429 p50 ms | /health p99 ms |"
    )
    for i, first in enumerate(rounds[0]):
        rows = [r[i] for r in rounds]
        share = [100 * p.goodput / r[0].goodput for p, r in zip(rows, rounds, strict=True)]
        ratio = [pct(p.ok, 99) / pct(r[0].ok, 99) for p, r in zip(rows, rounds, strict=True)]
        print(
            f"| {first.name} | {np.median(share):.0f} % | {np.median(ratio):.2f} | "
            f"{np.median([pct(p.refused, 50) for p in rows]):.1f} | "
            f"{np.median([pct(p.health, 99) for p in rows]):.1f} |"
        )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench overload", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--base-clients", type=int, default=32)
    parser.add_argument("--texts", type=int, default=8, help="texts per request")
    parser.add_argument("--timeout", type=float, default=15.0, help="client timeout, s")
    parser.add_argument("--multipliers", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--rounds", type=int, default=1, help="rounds; medians are printed too")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(
        "serve_flags", nargs=argparse.REMAINDER, help="after --, flags for `embedserve serve`"
    )
    args = parser.parse_args(argv)
    flags = [f for f in args.serve_flags if f != "--"]
    texts = make_texts("short", 4096, seed=7)

    rounds: list[list[Phase]] = []
    with serve(["--model", MODEL, "--log-level", "warning", *flags]) as server:
        run(lambda: run_phase(server.url, Phase("warm-up", 8), texts, args.texts, 5, 60))
        for _ in range(args.rounds):
            rounds.append(measure_round(server.url, args, texts))
        rss_mb = server.status_kb("VmHWM") / 1024

    print(
        f"\n{args.texts} short texts a request, {args.seconds:g} s a phase, client timeout "
        f"{args.timeout:g} s, 429s honoured; server flags {flags or 'default'}; "
        f"server VmHWM {rss_mb:.0f} MB"
    )
    for number, phases in enumerate(rounds, 1):
        print(f"\nround {number}")
        print_table(phases)
    if len(rounds) > 1:
        print_medians(rounds)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                [[{**asdict(p), "goodput": p.goodput} for p in phases] for phases in rounds], out
            )
