"""What one request costs a Python HTTP server before any model work: the floor under issue
#23's one-text goal (p50 ≤ 1.15× the engine's own one-text time).

    python -m bench floor [--seconds 8] [--rounds 3] [--model all-MiniLM-L6-v2]

Three servers answer `POST /v1/embeddings` on the same uvicorn + httptools + uvloop stack:

- `asgi`: a bare ASGI callable (bench/floor_apps.py) that reads and JSON-decodes the request and
  answers a canned OpenAI-shaped body of one 384-float vector: the HTTP stack alone;
- `litestar`: one Litestar route doing the same: the stack plus the framework;
- `embedserve`: `embedserve serve --model <model> --cache-bytes 0` with every model run answered
  by a constant vector (bench/constant_model.py): the whole server — its pipeline, tokenizer,
  normalization and encoding — less the model's time. Beside a real model run its work costs
  more (cold caches; bench/NOTES.md, "The server's work beside a model run").

The lean keep-alive client of `bench http` (bench/rawhttp.py) sends one request at a time, one
after another, for `--seconds`; p50 and p99 per round, medians over rounds. Add the engine's
one-text time (`bench onetext` prints it) to see the best p50 a server on this stack could show:
on a 1.85 ms model run the 1.15× goal leaves 0.28 ms for everything else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
from embedserve.models import DEFAULT_MODEL

from bench.machine import describe_machine
from bench.rawhttp import Connection, post_json, run
from bench.serving import free_port, serve
from bench.stats import percentile

STAND_INS = {"asgi": "bench.floor_apps:bare", "litestar": "bench.floor_apps:framework"}
SERVERS = (*STAND_INS, "embedserve")


def _serve(app: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--host", "127.0.0.1"]
    command += ["--http", "httptools", "--loop", "uvloop", "--log-level", "warning"]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{app} did not start")


@contextlib.contextmanager
def _running(server: str, model: str) -> Iterator[str]:
    """One of SERVERS on a free loopback port, for the block: its URL."""
    if server == "embedserve":
        flags = ["--model", model, "--cache-bytes", "0", "--log-level", "warning"]
        with serve(flags, module="bench.constant_model") as served:
            _check_constant(served.url, model)
            yield served.url
        return
    port = free_port()
    process = _serve(STAND_INS[server], port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _check_constant(url: str, model: str) -> None:
    """Refuse to time a server whose model was not replaced: every vector it answers is the
    constant one, normalized (all its components equal)."""
    answer = httpx.post(f"{url}/v1/embeddings", json={"model": model, "input": "a"}, timeout=30)
    answer.raise_for_status()
    vector = answer.json()["data"][0]["embedding"]
    if max(vector) - min(vector) > 1e-6:
        raise RuntimeError("bench.constant_model's server computed a real vector")


async def _latencies(url: str, model: str, seconds: float) -> list[float]:
    body = json.dumps({"model": model, "input": "how far is the moon?"}).encode()
    raw = post_json(url, "/v1/embeddings", body)
    connection = Connection(url)
    for _ in range(200):  # warm the connection, the loop and the app
        await connection.request(raw)
    out: list[float] = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        answer = await connection.request(raw)
        out.append(time.perf_counter() - start)
        if answer.status != 200:
            raise RuntimeError(f"status {answer.status}: {answer.body[:300]!r}")
    connection.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench floor", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="the model whose tokenizer `embedserve` runs"
    )
    args = parser.parse_args(argv)
    print(describe_machine())
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in SERVERS}
    for _ in range(args.rounds):
        for name in SERVERS:  # alternated, so drift hits all alike
            with _running(name, args.model) as url:
                times = run(lambda url=url: _latencies(url, args.model, args.seconds))
            results[name].append((percentile(times, 0.5), percentile(times, 0.99), len(times)))
    print("\n| server | p50 ms (rounds) | median p50 ms | median p99 ms | requests/round |")
    print("|---|---|---:|---:|---:|")
    for name, rounds in results.items():
        p50s = ", ".join(f"{1000 * p50:.3f}" for p50, _, _ in rounds)
        print(
            f"| {name} | {p50s} | {1000 * statistics.median(r[0] for r in rounds):.3f} "
            f"| {1000 * statistics.median(r[1] for r in rounds):.3f} "
            f"| {statistics.median(r[2] for r in rounds):.0f} |"
        )


if __name__ == "__main__":
    main()
