"""Overload: capacity, then goodput at 2x/5x/10x offered load, with `Retry-After` honoured.

    python -m bench overload [--task embed|rerank] [--seconds 30] [--base-clients 32] [--texts 8]

`--task embed` (the default) sends `--texts` short texts a request to /v1/embeddings of
all-MiniLM-L6-v2; `--task rerank` sends one query and `--texts` medium documents (about 60
tokens) a request to /v1/rerank of a cross-encoder (`--reranker`, by default ms-marco-MiniLM-L-6's
shape: bench/cross_encoder.py); goodput then counts query-document pairs.

1. Capacity: `--base-clients` closed-loop clients, each sending requests back to back for
   `--seconds`: items/s answered 200, and the latency p50/p99 ("unloaded" in the goals below: the
   server is busy but not overloaded).
2. For each multiplier M: M x base clients, closed loop, each request with a client timeout of
   `--timeout` s; a 429 makes that client sleep `Retry-After` seconds before its next request.
   Goodput = items/s answered 200 within the timeout, each 200 checked to hold one result per
   item. A prober reads GET /health every 100 ms. Any 5xx is counted and its first body printed.

Goals (issue #7): at 10x, goodput >= 80 % of capacity, admitted p99 <= 3x the capacity run's
p99, /health p99 < 100 ms, and every 429 answered in < 5 ms (server side; the client's view is
shown, on the same cores).

`--mixed` (issue #23, priorities) measures something else: `--interactive-clients` closed-loop
clients sending one short text a request, first alone, then while `--batch-clients` clients (in
a process of their own, so their large answers never hold the interactive client's loop)
flood the server with `--batch-texts` texts a request sent with `X-Priority: batch` (honouring
Retry-After; answers as JSON floats, or base64 with `--batch-encoding base64`, as `embed-file
--server` asks), then with the same flood sent without the header (as interactive work). Printed:
the interactive p50/p99 in each, its p99 against the alone run's (goal with the header: <= 2x),
and the flood's goodput. `--seconds` is each phase's length.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bench.cross_encoder import QUERIES, RERANKER, model_flag
from bench.rawhttp import Connection, post_json, prober, run
from bench.serving import serve
from bench.texts import make_texts

MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Task:
    """What the clients send: the route, a request's body for a batch of texts, and the marker
    that appears once per item in a good answer (so a 200 with the wrong count is caught)."""

    name: str
    unit: str  # what goodput counts
    path: str
    text_set: str
    body: Callable[[list[str], int], bytes]  # (texts, request number) -> JSON body
    per_item: bytes
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request


def embed_task(encoding_format: str = "float") -> Task:
    extra = {} if encoding_format == "float" else {"encoding_format": encoding_format}
    return Task(
        "embed",
        "texts",
        "/v1/embeddings",
        "short",
        lambda texts, _: json.dumps({"model": MODEL, "input": texts, **extra}).encode(),
        b'"embedding":',
    )


def rerank_task() -> Task:
    def body(texts: list[str], number: int) -> bytes:
        query = QUERIES[number % len(QUERIES)]
        return json.dumps({"model": RERANKER, "query": query, "documents": texts}).encode()

    return Task("rerank", "pairs", "/v1/rerank", "medium", body, b'"relevance_score":')


@dataclass
class Phase:
    name: str
    clients: int
    seconds: float = 0.0
    sent: int = 0
    ok_items: int = 0
    ok: list[float] = field(default_factory=list)  # latency of 200s, s
    refused: list[float] = field(default_factory=list)  # latency of 429s, s
    timeouts: int = 0
    server_errors: int = 0  # 5xx answers
    other: dict[str, int] = field(default_factory=dict)  # other statuses, transport errors
    bodies: dict[str, str] = field(default_factory=dict)  # the first body of each 5xx/other
    health: list[float] = field(default_factory=list)

    @property
    def goodput(self) -> float:
        return self.ok_items / self.seconds if self.seconds else 0.0

    @property
    def refused_share(self) -> float:
        """429s as a share of the requests sent."""
        return len(self.refused) / self.sent if self.sent else 0.0

    def note(self, key: str, body: bytes = b"") -> None:
        self.other[key] = self.other.get(key, 0) + 1
        self.bodies.setdefault(key, body[:300].decode("utf-8", "replace"))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3 if values else float("nan")


async def run_phase(
    url: str,
    task: Task,
    phase: Phase,
    texts: list[str],
    per_request: int,
    seconds: float,
    timeout: float,
) -> Phase:
    stop = time.monotonic() + seconds

    async def one_client(seed: int) -> None:
        connection = Connection(url)
        index = seed * per_request
        number = seed
        while time.monotonic() < stop:
            batch = [texts[(index + i) % len(texts)] for i in range(per_request)]
            index += per_request * phase.clients
            number += phase.clients
            raw = post_json(url, task.path, task.body(batch, number), task.headers)
            phase.sent += 1
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
                phase.note(type(exc).__name__)
                await asyncio.sleep(0.1)
                continue
            took = time.monotonic() - sent
            if answer.status == 200 and answer.body.count(task.per_item) != per_request:
                phase.note("200 with a wrong result count", answer.body)
            elif answer.status == 200:
                if time.monotonic() <= stop + timeout:
                    phase.ok.append(took)
                    phase.ok_items += per_request
            elif answer.status == 429:
                phase.refused.append(took)
                retry = float(answer.headers.get("retry-after", "1"))
                await asyncio.sleep(min(retry, max(0.0, stop - time.monotonic())))
            else:
                phase.server_errors += answer.status >= 500
                phase.note(str(answer.status), answer.body)
        connection.close()

    started = time.monotonic()
    with prober(url, seconds) as health:
        await asyncio.gather(*(one_client(i) for i in range(phase.clients)))
        phase.seconds = min(time.monotonic(), stop) - started
    phase.health = health
    return phase


def measure_round(url: str, task: Task, args: argparse.Namespace, texts: list[str]) -> list[Phase]:
    """Capacity, then each multiplier, on a warm server."""
    capacity = run(
        lambda: run_phase(
            url, task, Phase("capacity", args.base_clients), texts, args.texts, args.seconds, 60
        )
    )
    phases = [capacity]
    for m in args.multipliers:
        phase = Phase(f"{m}x", args.base_clients * m)
        phases.append(
            run(
                lambda phase=phase: run_phase(
                    url, task, phase, texts, args.texts, args.seconds, args.timeout
                )
            )
        )
    return phases


def print_table(phases: list[Phase], unit: str) -> None:
    base = phases[0].goodput
    print(
        f"| load | clients | goodput {unit}/s | % of capacity | 200 p50 ms | 200 p99 ms | "
        "p99 / capacity p99 | 429s | 429 share | 429 p50 ms | 429 p99 ms | timeouts | 5xx | "
        "other | /health p99 ms |"
    )
    print("|---" * 15 + "|")
    for p in phases:
        print(
            f"| {p.name} | {p.clients} | {p.goodput:.1f} | {100 * p.goodput / base:.0f} % | "
            f"{pct(p.ok, 50):.0f} | {pct(p.ok, 99):.0f} | "
            f"{pct(p.ok, 99) / pct(phases[0].ok, 99):.2f} | {len(p.refused)} | "
            f"{100 * p.refused_share:.0f} % | "
            f"{pct(p.refused, 50):.1f} | {pct(p.refused, 99):.1f} | {p.timeouts} | "
            f"{p.server_errors} | {p.other or '-'} | {pct(p.health, 99):.1f} |"
        )
    for p in phases:
        for key, body in p.bodies.items():
            if body:
                print(f"{p.name}: first {key} answer: {body!r}")


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


def measure_mixed(url: str, args: argparse.Namespace, texts: list[str]) -> list[Phase]:
    """The interactive clients alone, then beside a flood with the batch header, then beside the
    same flood without it; each returned phase is the interactive clients' (the flood's phase
    follows it in the list, for its goodput)."""
    task = embed_task()
    flood_task = embed_task(args.batch_encoding)
    flood = replace(flood_task, name="batch flood", headers={"x-priority": "batch"})

    async def alone() -> list[Phase]:
        phase = Phase("interactive alone", args.interactive_clients)
        return [await run_phase(url, task, phase, texts, 1, args.seconds, args.timeout)]

    def beside(flood_task: Task, name: str) -> list[Phase]:
        # The flood runs in a process of its own: on one event loop, reading its 250 KB answers
        # held the interactive client's answers unread for milliseconds, which the interactive
        # latency then counted (a real interactive client is not inside the batch job).
        interactive = Phase(f"interactive + {name}", args.interactive_clients)
        batch = Phase(name, args.batch_clients)
        context = multiprocessing.get_context("fork")  # the task's body is a closure
        results = context.SimpleQueue()

        def flood_process() -> None:
            results.put(
                run(
                    lambda: run_phase(
                        url, flood_task, batch, texts, args.batch_texts, args.seconds, args.timeout
                    )
                )
            )

        process = context.Process(target=flood_process)  # not a daemon: it starts a prober
        process.start()
        run(lambda: run_phase(url, task, interactive, texts, 1, args.seconds, args.timeout))
        batch = results.get()
        process.join()
        return [interactive, batch]

    phases = run(alone)
    phases += beside(flood, "flood with X-Priority: batch")
    phases += beside(flood_task, "flood without the header")
    return phases


def print_mixed(phases: list[Phase]) -> None:
    alone = phases[0]
    print(
        "| phase | clients | interactive p50 ms | interactive p99 ms | p99 / alone p99 | "
        "interactive 429s | timeouts | flood texts/s | flood 429s | /health p99 ms |"
    )
    print("|---" * 10 + "|")
    rows = [(alone, None), (phases[1], phases[2]), (phases[3], phases[4])]
    for inter, flood in rows:
        print(
            f"| {inter.name} | {inter.clients} | {pct(inter.ok, 50):.1f} | {pct(inter.ok, 99):.1f} | "
            f"{pct(inter.ok, 99) / pct(alone.ok, 99):.2f} | {len(inter.refused)} | "
            f"{inter.timeouts + (flood.timeouts if flood else 0)} | "
            f"{flood.goodput if flood else 0:.1f} | {len(flood.refused) if flood else 0} | "
            f"{pct(inter.health, 99):.1f} |"
        )
    for p in phases:
        for key, body in p.bodies.items():
            if body:
                print(f"{p.name}: first {key} answer: {body!r}")


def print_mixed_medians(rounds: list[list[Phase]]) -> None:
    print(f"\nmedians of {len(rounds)} rounds: | phase | interactive p99 ms | p99 / alone p99 |")
    for i in (0, 1, 3):
        p99 = [pct(r[i].ok, 99) for r in rounds]
        ratio = [pct(r[i].ok, 99) / pct(r[0].ok, 99) for r in rounds]
        print(f"| {rounds[0][i].name} | {np.median(p99):.1f} | {np.median(ratio):.2f} |")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench overload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=["embed", "rerank"], default="embed")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warm-up", type=float, default=5.0, help="seconds of warm-up load")
    parser.add_argument("--base-clients", type=int, default=32)
    parser.add_argument(
        "--texts", type=int, default=8, help="texts per request (rerank: documents per query)"
    )
    parser.add_argument(
        "--reranker",
        type=Path,
        help="cross-encoder folder for --task rerank (default: bench/cross_encoder.py's)",
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="client timeout, s")
    parser.add_argument("--multipliers", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--rounds", type=int, default=1, help="rounds; medians are printed too")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(
        "--mixed", action="store_true", help="interactive one-text requests beside a batch flood"
    )
    parser.add_argument("--interactive-clients", type=int, default=1)
    parser.add_argument("--batch-clients", type=int, default=8)
    parser.add_argument("--batch-texts", type=int, default=64, help="texts per flood request")
    parser.add_argument(
        "--batch-encoding",
        choices=["float", "base64"],
        default="float",
        help="the flood's encoding_format (base64: what `embed-file --server` asks for)",
    )
    parser.add_argument(
        "serve_flags", nargs=argparse.REMAINDER, help="after --, flags for `embedserve serve`"
    )
    args = parser.parse_args(argv)
    flags = [f for f in args.serve_flags if f != "--"]
    if args.task == "rerank":
        task = rerank_task()
        model = model_flag(args.reranker)
    else:
        task, model = embed_task(), MODEL
    texts = make_texts(task.text_set, 4096, seed=7)

    rounds: list[list[Phase]] = []
    with serve(["--model", model, "--log-level", "warning", *flags]) as server:
        run(
            lambda: run_phase(
                server.url, task, Phase("warm-up", 8), texts, args.texts, args.warm_up, 60
            )
        )
        for _ in range(args.rounds):
            rounds.append(
                measure_mixed(server.url, args, texts)
                if args.mixed
                else measure_round(server.url, task, args, texts)
            )
        rss_mb = server.status_kb("VmHWM") / 1024
    if args.mixed:
        print(
            f"\nmixed: {args.interactive_clients} interactive client(s), one short text a "
            f"request; flood: {args.batch_clients} clients x {args.batch_texts} texts; "
            f"{args.seconds:g} s a phase; server flags {flags or 'default'}; server log "
            f"{server.log}"
        )
        for number, phases in enumerate(rounds, 1):
            print(f"\nround {number}")
            print_mixed(phases)
        if len(rounds) > 1:
            print_mixed_medians(rounds)
    else:
        print(
            f"\n{task.name}: {args.texts} {task.text_set} texts a request to {task.path} "
            f"({model}), {args.seconds:g} s a phase, client timeout {args.timeout:g} s, 429s "
            f"honoured; server flags {flags or 'default'}; server VmHWM {rss_mb:.0f} MB; "
            f"server log {server.log}"
        )
        for number, phases in enumerate(rounds, 1):
            print(f"\nround {number}")
            print_table(phases, task.unit)
        if len(rounds) > 1:
            print_medians(rounds)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                [[{**asdict(p), "goodput": p.goodput} for p in phases] for phases in rounds], out
            )
