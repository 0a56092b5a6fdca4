"""What replication buys: one server with N threads against N one-thread replicas, same cores.

    python -m bench replicas --concurrency 1 16 --texts-per-request 1 32 --seconds 10

Three layouts, each given the same `--cores` (default: all of this machine's):

- one:      one `embedserve serve`, --intra-op-threads CORES
- workers:  one `embedserve serve --workers CORES`, --intra-op-threads 1 (uvicorn's processes
            share the listening socket; the kernel spreads connections)
- proxy:    CORES `embedserve serve` processes, --intra-op-threads 1, behind a tiny round-robin
            TCP proxy (a separate process, one backend per client connection) — the shape of
            replicas behind a Kubernetes Service

The load generator (this process) sends `POST /v1/embeddings` from C keep-alive connections
back to back for `--seconds` per cell and counts texts/s. It, the proxy and the servers all share
the same cores, as they would not in a cluster: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.bench_http import _free_port, _stop, _wait_ready
from bench.machine import describe_machine
from bench.texts import make_texts

# -- the proxy (runs as `python -m bench.bench_replicas --proxy PORT BACKEND_PORT...`) --


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _proxy(port: int, backends: list[int]) -> None:
    turn = itertools.cycle(backends)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", next(turn))
        await asyncio.gather(_pipe(reader, backend_writer), _pipe(backend_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# -- servers --


def _serve(model: str, port: int, threads: int, workers: int = 1) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "embedserve.cli",
        "serve",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--intra-op-threads",
        str(threads),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@contextlib.contextmanager
def layout(name: str, model: str, cores: int) -> Iterator[str]:
    """Start the layout, wait until it is ready, yield its URL, stop it."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if name == "one":
            port = _free_port()
            processes.append(_serve(model, port, cores))
            urls = [f"http://127.0.0.1:{port}"]
        elif name == "workers":
            port = _free_port()
            processes.append(_serve(model, port, 1, workers=cores))
            urls = [f"http://127.0.0.1:{port}"]
        else:
            ports = [_free_port() for _ in range(cores)]
            processes += [_serve(model, p, 1) for p in ports]
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            port = _free_port()
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.bench_replicas",
                        "--proxy",
                        str(port),
                        *map(str, ports),
                    ],
                    start_new_session=True,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            _wait_ready(url, 300, None, None)
        yield urls[-1]
        peaks = [_peak_mib(pid) for p in processes for pid in _family(p.pid)]
        print(
            f"  {name}: peak RSS per process (MiB): {', '.join(f'{m:.0f}' for m in peaks if m)}",
            flush=True,
        )
    finally:
        for process in processes:
            _stop(process)


def _family(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn's workers are children of the supervisor)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(c for child in children for c in _family(int(child)))]


def _peak_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next(
        (int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM")),
        0.0,
    )


# -- the load --


async def _client(
    url: str, bodies: list[bytes], stop_at: float, counts: list[int], texts: int
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as client:
        for body in itertools.cycle(bodies):
            if time.perf_counter() >= stop_at:
                return
            answer = await client.post(
                "/v1/embeddings", content=body, headers={"content-type": "application/json"}
            )
            answer.raise_for_status()
            counts.append(texts)


async def _load(
    url: str, concurrency: int, texts: int, seconds: float, pool: list[str], model: str
) -> float:
    bodies = [
        json.dumps({"model": model, "input": pool[i : i + texts]}).encode()
        for i in range(0, len(pool) - texts, max(texts, 1))
    ][:64]
    counts: list[int] = []
    warm_until = time.perf_counter() + 1.0
    await asyncio.gather(*(_client(url, bodies, warm_until, [], texts) for _ in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(
        *(_client(url, bodies, start + seconds, counts, texts) for _ in range(concurrency))
    )
    return sum(counts) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--proxy"]:
        asyncio.run(_proxy(int(argv[1]), [int(p) for p in argv[2:]]))
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench replicas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--layouts",
        nargs="+",
        default=["one", "workers", "proxy"],
        choices=["one", "workers", "proxy"],
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--texts-per-request", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell (median reported)")
    args = parser.parse_args(argv)

    pool = make_texts("mix", 4096)
    print(describe_machine())
    print(f"cores={args.cores} seconds={args.seconds} repeats={args.repeats} set=mix", flush=True)
    results: dict[tuple[str, int, int], float] = {}
    for name in args.layouts:
        with layout(name, args.model, args.cores) as url:
            for c, t in itertools.product(args.concurrency, args.texts_per_request):
                runs = [
                    asyncio.run(_load(url, c, t, args.seconds, pool, args.model))
                    for _ in range(args.repeats)
                ]
                results[(name, c, t)] = statistics.median(runs)
                print(
                    f"  {name:<8} C={c:<3} T={t:<3} {results[(name, c, t)]:8.1f} texts/s",
                    flush=True,
                )
    print(
        f"\n{'C x T':<10}"
        + "".join(f"{n:>12}" for n in args.layouts)
        + "".join(f"{n + '/one':>14}" for n in args.layouts if n != "one")
    )
    for c, t in itertools.product(args.concurrency, args.texts_per_request):
        row = f"{f'{c} x {t}':<10}" + "".join(f"{results[(n, c, t)]:>12.1f}" for n in args.layouts)
        if "one" in args.layouts:
            row += "".join(
                f"{results[(n, c, t)] / results[('one', c, t)]:>13.2f}x"
                for n in args.layouts
                if n != "one"
            )
        print(row)


if __name__ == "__main__":
    main()
