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

import httpx
import numpy as np

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
    limits = httpx.Limits(
        max_connections=phase.clients + 4, max_keepalive_connections=phase.clients
    )
    stop = time.monotonic() + seconds

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:

        async def one_client(seed: int) -> None:
            index = seed * per_request
            while time.monotonic() < stop:
                batch = [texts[(index + i) % len(texts)] for i in range(per_request)]
                index += per_request * phase.clients
                sent = time.monotonic()
                try:
                    # The timeout is the client's patience for the whole request (httpx's own
                    # applies to each read and write separately).
                    response = await asyncio.wait_for(
                        client.post("/v1/embeddings", json={"model": MODEL, "input": batch}),
                        timeout,
                    )
                except (httpx.TimeoutException, asyncio.TimeoutError):
                    phase.timeouts += 1
                    continue
                except httpx.TransportError as exc:
                    key = type(exc).__name__
                    phase.other[key] = phase.other.get(key, 0) + 1
                    await asyncio.sleep(0.1)
                    continue
                took = time.monotonic() - sent
                if response.status_code == 200:
                    if time.monotonic() <= stop + timeout:
                        phase.ok.append(took)
                        phase.ok_texts += per_request
                elif response.status_code == 429:
                    phase.refused.append(took)
                    retry = float(response.headers.get("retry-after", "1"))
                    await asyncio.sleep(min(retry, max(0.0, stop - time.monotonic())))
                else:
                    key = str(response.status_code)
                    phase.other[key] = phase.other.get(key, 0) + 1

        async def prober() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as probe:
                while time.monotonic() < stop:
                    sent = time.monotonic()
                    try:
                        await probe.get("/health")
                        phase.health.append(time.monotonic() - sent)
                    except httpx.TransportError:
                        phase.health.append(10.0)
                    await asyncio.sleep(0.1)

        started = time.monotonic()
        await asyncio.gather(prober(), *(one_client(i) for i in range(phase.clients)))
        phase.seconds = min(time.monotonic(), stop) - started
    return phase


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench overload", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--base-clients", type=int, default=32)
    parser.add_argument("--texts", type=int, default=8, help="texts per request")
    parser.add_argument("--timeout", type=float, default=15.0, help="client timeout, s")
    parser.add_argument("--multipliers", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(
        "serve_flags", nargs=argparse.REMAINDER, help="after --, flags for `embedserve serve`"
    )
    args = parser.parse_args(argv)
    flags = [f for f in args.serve_flags if f != "--"]
    texts = make_texts("short", 4096, seed=7)

    phases: list[Phase] = []
    with serve(["--model", MODEL, "--log-level", "warning", *flags]) as server:
        asyncio.run(run_phase(server.url, Phase("warm-up", 8), texts, args.texts, 5, 60))
        capacity = asyncio.run(
            run_phase(
                server.url,
                Phase("capacity", args.base_clients),
                texts,
                args.texts,
                args.seconds,
                60,
            )
        )
        phases.append(capacity)
        for m in args.multipliers:
            phase = Phase(f"{m}x", args.base_clients * m)
            phases.append(
                asyncio.run(
                    run_phase(server.url, phase, texts, args.texts, args.seconds, args.timeout)
                )
            )
        rss_mb = server.status_kb("VmHWM") / 1024

    base = capacity.goodput
    print(
        f"\n{args.texts} short texts a request, {args.seconds:g} s a phase, client timeout "
        f"{args.timeout:g} s, 429s honoured; server VmHWM {rss_mb:.0f} MB"
    )
    header = (
        "| load | clients | goodput texts/s | % of capacity | 200 p50 ms | 200 p99 ms | "
        "429s | 429 p50 ms | 429 p99 ms | timeouts | other | /health p99 ms |"
    )
    print(header)
    print("|---" * 12 + "|")
    for p in phases:
        print(
            f"| {p.name} | {p.clients} | {p.goodput:.1f} | {100 * p.goodput / base:.0f} % | "
            f"{pct(p.ok, 50):.0f} | {pct(p.ok, 99):.0f} | {len(p.refused)} | "
            f"{pct(p.refused, 50):.1f} | {pct(p.refused, 99):.1f} | {p.timeouts} | "
            f"{p.other or '-'} | {pct(p.health, 99):.1f} |"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump([{**asdict(p), "goodput": p.goodput} for p in phases], out)
