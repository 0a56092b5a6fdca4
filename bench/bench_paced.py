"""One client at a fixed request rate: one-text latency and the server's CPU between requests.

    python -m bench paced [--rates 20 50 200] [--seconds 20] [--rounds 2]
                          [--variant="" --variant="--idle-spin-us 0" ...]

Interactive search sends one short query now and then, not back to back as `bench http
--concurrency 1` does. Here one client sends one short text a request at a fixed rate (a request
leaves at each tick of the rate, or as soon as the one before is answered if that is later), to
`embedserve serve` started with each `--variant` of flags in turn (rounds alternate the variants),
and prints the latency p50/p99 and the cores the server process kept busy over the phase (its
CPU time ÷ the wall time; ONNX Runtime's threads spinning between runs count).

Then the engine alone in this process, one text a call with the same pauses between calls (a
sleep), next to back-to-back calls: what the model run itself costs after a pause, which no
server setting removes (bench/NOTES.md, "CPU between requests").
"""

from __future__ import annotations

import argparse
import http.client
import json
import shlex
import statistics
import time
from pathlib import Path

from embedserve.models import DEFAULT_MODEL

from bench.machine import describe_machine
from bench.serving import process_cpu_seconds, serve
from bench.stats import percentile


def paced_phase(url: str, model: str, rate: float, seconds: float, pid: int) -> dict[str, float]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    sent = [0]

    def one() -> float:
        sent[0] += 1
        body = json.dumps({"model": model, "input": f"paced query {sent[0]} about a password"})
        started = time.perf_counter()
        connection.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"the server answered {answer.status}")
        return time.perf_counter() - started

    for _ in range(100):  # warm-up, back to back
        one()
    latencies = []
    count = int(rate * seconds)
    cpu_before, start = process_cpu_seconds(pid), time.perf_counter()
    for i in range(count):
        pause = start + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        latencies.append(one())
    wall = time.perf_counter() - start
    cores = (process_cpu_seconds(pid) - cpu_before) / wall
    connection.close()
    return {
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "server_cores": cores,
        "requests": count,
    }


def engine_after_pauses(model: str, pauses_ms: list[float], calls: int) -> dict[float, float]:
    """Median ms of one `embed` of one text after each pause (0: back to back)."""
    from embedserve.engine import Engine

    engine = Engine.from_pretrained(model, cache_bytes=0)
    for i in range(100):
        engine.embed([f"warm-up text {i}"])
    medians = {}
    for pause in pauses_ms:
        times = []
        for i in range(calls):
            if pause:
                time.sleep(pause / 1e3)
            started = time.perf_counter()
            engine.embed([f"query {i} after a pause of {pause} ms"])
            times.append(time.perf_counter() - started)
        medians[pause] = statistics.median(times) * 1e3
    return medians


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench paced", description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0, 50.0, 200.0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per rate and variant")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--variant",
        action="append",
        help='`embedserve serve` flags of one variant, as --variant="--idle-spin-us 0" '
        "(--variant= for the defaults); repeatable",
    )
    parser.add_argument("--engine-calls", type=int, default=300, help="0 skips the engine part")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    variants = args.variant or ["", "--idle-spin-us 0"]
    print(describe_machine())
    results: dict[str, dict[float, list[dict[str, float]]]] = {v: {} for v in variants}
    for round_ in range(1, args.rounds + 1):
        for variant in variants:
            flags = ["--model", args.model, "--log-level", "warning", *shlex.split(variant)]
            with serve(flags) as served:
                for rate in args.rates:
                    phase = paced_phase(
                        served.url, args.model, rate, args.seconds, served.process.pid
                    )
                    results[variant].setdefault(rate, []).append(phase)
                    print(
                        f"round {round_} [{variant or 'defaults'}] {rate:g}/s: "
                        f"p50 {phase['p50_ms']:.2f} ms, p99 {phase['p99_ms']:.2f} ms, "
                        f"server {phase['server_cores']:.2f} cores",
                        flush=True,
                    )
    print("\n| flags | requests/s | p50 ms | p99 ms | server cores |")
    print("|---|---:|---:|---:|---:|")
    for variant in variants:
        for rate, phases in results[variant].items():
            p50, p99, cores = (
                statistics.median(p[key] for p in phases)
                for key in ("p50_ms", "p99_ms", "server_cores")
            )
            name = f"`{variant}`" if variant else "defaults"
            print(f"| {name} | {rate:g} | {p50:.2f} | {p99:.2f} | {cores:.2f} |")
    engine: dict[float, float] = {}
    if args.engine_calls:
        pauses = [0.0, *(1e3 / rate for rate in args.rates)]
        engine = engine_after_pauses(args.model, pauses, args.engine_calls)
        print("\nthe engine alone, one text a call (median of", args.engine_calls, "calls):")
        for pause, ms in engine.items():
            print(f"  after a pause of {pause:.0f} ms: {ms:.2f} ms")
    if args.json:
        args.json.write_text(
            json.dumps({"servers": results, "engine_after_pause_ms": engine}, indent=1)
        )
