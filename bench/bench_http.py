"""HTTP load on `embedserve serve`: texts/s, client latency percentiles and the server's own
tokenization / queue / inference split, next to the engine alone on the same texts.

    python -m bench http --concurrency 1 8 32 128 --texts-per-request 1 32 --formats float base64

Three phases, one after another, never overlapping (on a 2-core machine they would fight):

1. engine: in this process, `Engine.from_pretrained` with the server's model, quantization,
   threads and batch budget. For each cell's in-flight size C × T, texts/s of `engine.embed()`
   called on chunks of C × T texts from the same pool, one call after another: everything the
   server can batch at once for that cell. Then the median latency of one text (`--single`
   calls). The engine is freed before the server starts.
2. server: started as a subprocess on a free loopback port (or `--url` for one already running),
   then polled until GET /ready answers 200.
3. load: per cell (concurrency C × texts per request T × encoding), C asyncio tasks, each with
   its own keep-alive connection (a lean client, bench/rawhttp.py; `--client httpx` for httpx,
   `--shared-client`: one httpx pool for all), send HTTP/1.1
   POST /v1/embeddings back to back, each request with different texts from the pool, until
   C × `--requests` requests and `--min-seconds` are done, or `--max-seconds` have passed, or
   10 × C × `--requests` requests were sent; requests in flight finish. Every answer is
   checked: status 200, T rows in order, `dim` floats (or base64 of `dim` × 4 bytes); warm-up
   answers are also compared with the engine's vectors (cosine).

"ratio" = server texts/s ÷ engine texts/s at the same C × T (issue #10's target: ≥ 0.90 at
32 × 32); the summary also gives p50 at 1 × 1 ÷ the engine's single-text median (issue #23's
target ≤ 1.15; measured minutes apart here, so `python -m bench onetext` is the one to trust).
The client runs on the same cores as the server: "cli cpu" and "srv cpu" say how many cores each kept busy.
"srv ... ms" are means of the x-*-time headers; "batch", "pad" and "busy" come from /metrics:
inputs per model batch, padded ÷ real tokens, and the fraction of the cell the model was running.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import datetime
import gc
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from embedserve.models import DEFAULT_MODEL

from bench.bench_onetext import ONE_TEXT_TARGET
from bench.rawhttp import RawClient
from bench.serving import process_cpu_seconds
from bench.texts import SETS, make_texts

try:  # the client shares the server's cores: parse answers as cheaply as we can
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
    _dumps: Callable[[Any], bytes] = orjson.dumps
except ImportError:  # pragma: no cover - orjson is optional
    _loads = json.loads

    def _dumps(value: Any) -> bytes:
        return json.dumps(value).encode()


PHASES = ("x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time")
# Counters read from GET /metrics before and after a cell, summed over models.
SCRAPED = (
    "embedserve_batch_inputs_count",
    "embedserve_batch_inputs_sum",
    "embedserve_batch_padded_tokens_sum",
    "embedserve_batch_inference_seconds_sum",
    "embedserve_tokens_total",
)
PATH = "/v1/embeddings"
# A cell gives up after this many failed requests: a dead server fails fast and often.
MAX_ERRORS = 50
MIN_COSINE = 0.999


# -- the engine alone --


@dataclass
class EngineBaseline:
    single_ms: float  # median of `--single` one-text embed() calls
    single_calls: int
    texts_per_s: dict[int, float]  # by in-flight size C × T
    dimension: int
    tokens_per_text: float
    reference: np.ndarray  # the first pool texts' vectors, to check the server's answers


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The server's engine settings: `embedserve serve` passes these and no others."""
    # Each round sends the same texts: they must reach the model (the server runs with the
    # cache off too: bench/__main__.py).
    options: dict[str, Any] = {"providers": args.providers, "cache_bytes": 0}
    if args.threads:
        options["intra_op_threads"] = args.threads
    if args.max_batch_tokens:
        options["max_batch_tokens"] = args.max_batch_tokens
    if args.quantize:
        options["quantize"] = args.quantize
    return options


def _take(pool: list[str], start: int, count: int) -> list[str]:
    return [pool[(start + k) % len(pool)] for k in range(count)]


def measure_engine(
    args: argparse.Namespace, pool: list[str], sizes: list[int], references: int
) -> EngineBaseline:
    from embedserve.engine import Engine

    engine = Engine.from_pretrained(args.model, **engine_options(args))
    first = engine.embed(pool[:references])  # warm-up too
    singles = []
    for i in range(args.single + 5):
        start = time.perf_counter()
        engine.embed([pool[i % len(pool)]])
        if i >= 5:
            singles.append(time.perf_counter() - start)
    rates = {}
    for size in sorted(set(sizes)):
        done, calls, start = 0, 0, time.perf_counter()
        # At least one call; then until --engine-seconds, and never past --max-seconds.
        while True:
            engine.embed(_take(pool, done, size))
            done, calls = done + size, calls + 1
            elapsed = time.perf_counter() - start
            if elapsed >= args.engine_seconds or elapsed >= args.max_seconds or calls >= 100_000:
                break
        rates[size] = done / elapsed
        print(
            f"  engine: {size:>5} texts a call: {rates[size]:8.1f} texts/s ({calls} calls)",
            flush=True,
        )
    return EngineBaseline(
        single_ms=float(np.median(singles)) * 1e3,
        single_calls=len(singles),
        texts_per_s=rates,
        dimension=engine.model_info.dimension,
        tokens_per_text=float(first.token_counts.mean()),
        reference=first.embeddings.copy(),
    )


# -- the server --


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(args: argparse.Namespace, port: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "embedserve.cli",
        "serve",
        "--model",
        args.model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        args.server_log_level,
    ]
    if args.providers:
        command += ["--providers", args.providers]
    if args.threads:
        command += ["--intra-op-threads", str(args.threads)]
    if args.max_batch_tokens:
        command += ["--max-batch-tokens", str(args.max_batch_tokens)]
    if args.quantize:
        command += ["--quantize", args.quantize]
    return command + list(args.server_arg)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_ready(
    url: str, timeout: float, process: subprocess.Popen[bytes] | None, log: Path | None
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=5, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                tail = _tail(log) if log else ""
                raise RuntimeError(
                    f"the server exited with code {process.returncode} before "
                    f"it was ready; its output ends with:\n{tail}"
                )
            try:
                answer = client.get(url + "/ready")
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:200]}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
    tail = f"; its output ends with:\n{_tail(log)}" if log else ""
    raise RuntimeError(f"{url}/ready did not answer 200 within {timeout:.0f}s (last: {last}){tail}")


def _stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # uvicorn shuts down gracefully on SIGTERM
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    command: list[str] = field(default_factory=list)

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server process, all its threads; None if not ours."""
        if self.process is None:
            return None
        try:
            return process_cpu_seconds(self.process.pid)
        except (OSError, IndexError):
            return None

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None


@contextlib.contextmanager
def running_server(args: argparse.Namespace) -> Iterator[Server]:
    if args.url:
        url = args.url.rstrip("/")
        _wait_ready(url, args.start_timeout, None, None)
        yield Server(url)
        return
    port = _free_port()
    command = serve_command(args, port)
    handle, name = tempfile.mkstemp(prefix="embedserve-bench-", suffix=".log")
    log = Path(name)
    # Own session: a ctrl-C in the terminal reaches us only, and we stop the server in order.
    with os.fdopen(handle, "wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, command)
    try:
        _wait_ready(server.url, args.start_timeout, process, log)
        yield server
    finally:
        _stop(process)
        text = log.read_text(errors="replace") if log.exists() else ""
        trouble = [
            line
            for line in text.splitlines()
            if "Traceback" in line or line.startswith(("ERROR", "CRITICAL"))
        ]
        if trouble:
            print(
                f"\nserver log has {len(trouble)} error lines; it ends with:\n{_tail(log)}\n"
                f"(kept at {log})"
            )
        else:
            log.unlink(missing_ok=True)


# -- the load --


@dataclass
class Cell:
    concurrency: int
    texts_per_request: int
    encoding: str
    requests: int = 0
    ok: int = 0
    errors: int = 0
    texts: int = 0
    seconds: float = 0.0
    texts_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, p99, max
    server_mean_ms: dict[str, float] = field(default_factory=dict)
    server_median_ms: dict[str, float] = field(default_factory=dict)
    prompt_tokens_per_text: float = 0.0
    warmup_min_cosine: float | None = None
    client_cores: float = 0.0
    server_cores: float | None = None
    # From /metrics: inputs per model batch, padded ÷ real tokens, model busy ÷ wall time.
    batch_inputs: float | None = None
    padding: float | None = None
    model_busy: float | None = None
    engine_texts_per_s: float | None = None
    ratio: float | None = None
    error_samples: list[str] = field(default_factory=list)
    complete: bool = False  # False: cut short by ctrl-C (or not run)


def _check(
    answer: httpx.Response, texts: int, encoding: str, dim: int | None, want_vectors: bool
) -> tuple[str | None, Any, np.ndarray | None]:
    """(problem or None, parsed body, vectors if asked) for one answer."""
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}: {answer.text[:200]}", None, None
    try:
        body = _loads(answer.content)
        data = body["data"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable body ({exc}): {answer.text[:200]}", None, None
    if len(data) != texts:
        return f"{len(data)} rows for {texts} texts", body, None
    rows = []
    for index, item in enumerate(data):
        if item.get("index") != index:
            return f"row {index} has index {item.get('index')!r}", body, None
        embedding = item["embedding"]
        if encoding == "base64":
            try:
                raw = binascii.a2b_base64(embedding)
            except (binascii.Error, TypeError) as exc:
                return f"row {index}: bad base64 ({exc})", body, None
            size = len(raw) // 4 if len(raw) % 4 == 0 else -1
            row = np.frombuffer(raw, dtype="<f4") if want_vectors and size > 0 else None
        else:
            size = len(embedding) if isinstance(embedding, list) else -1
            row = np.asarray(embedding, dtype=np.float32) if want_vectors and size > 0 else None
        if dim is not None and size != dim:
            return (
                (
                    f"row {index}: {size} floats, expected {dim}"
                    + (f" ({len(raw)} base64 bytes)" if encoding == "base64" else "")
                ),
                body,
                None,
            )
        rows.append(row)
    return None, body, (np.stack(rows) if want_vectors and rows else None)


async def _scrape(client: httpx.AsyncClient) -> dict[str, float] | None:
    """The batcher's counters, or None where /metrics is missing or unreadable."""
    try:
        answer = await client.get("/metrics")
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    totals = dict.fromkeys(SCRAPED, 0.0)
    for line in answer.text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            with contextlib.suppress(ValueError, IndexError):
                totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def _batching(cell: Cell, before: dict[str, float] | None, after: dict[str, float] | None) -> None:
    if before is None or after is None:
        return
    delta = {name: after[name] - before[name] for name in SCRAPED}
    batches = delta["embedserve_batch_inputs_count"]
    if batches > 0:
        cell.batch_inputs = delta["embedserve_batch_inputs_sum"] / batches
    real_tokens = delta["embedserve_tokens_total"]
    if real_tokens > 0:
        cell.padding = delta["embedserve_batch_padded_tokens_sum"] / real_tokens
    if cell.seconds > 0:
        cell.model_busy = delta["embedserve_batch_inference_seconds_sum"] / cell.seconds


def _describe(exc: BaseException) -> str:
    """httpx's ReadError and friends often carry no message: name the cause chain instead."""
    parts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(parts) < 4:
        parts.append(f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    return " <- ".join(parts)


def _bodies(pool: list[str], model: str, texts: int, encoding: str) -> list[bytes]:
    """Request bodies built once, so the timed loop spends no client CPU on JSON encoding."""
    count = max(1, len(pool) // texts)
    return [
        _dumps(
            {"model": model, "input": _take(pool, k * texts, texts), "encoding_format": encoding}
        )
        for k in range(count)
    ]


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return float(cos.min())


@dataclass
class _Tally:
    """What a cell's timed requests came back with."""

    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    phases_ms: dict[str, list[float]] = field(default_factory=lambda: {n: [] for n in PHASES})
    tokens: int = 0
    last_done: float = 0.0


async def run_cell(
    clients: list[httpx.AsyncClient],
    server: Server,
    cell: Cell,
    bodies: list[bytes],
    args: argparse.Namespace,
    dim: int | None,
    reference: np.ndarray | None,
) -> Cell:
    """Warm up, then load the server with `cell.concurrency` tasks; task i sends through
    `clients[i % len(clients)]`."""
    texts = cell.texts_per_request

    def failed(problem: str) -> None:
        cell.errors += 1
        if len(cell.error_samples) < 5:
            cell.error_samples.append(problem)

    # Warm-up, one request at a time, checked against the engine's vectors where we have them.
    cosines = []
    for k in range(args.warmup):
        try:
            answer = await clients[0].post(PATH, content=bodies[k % len(bodies)])
        except httpx.HTTPError as exc:
            failed(f"warm-up: {_describe(exc)}")
            continue
        problem, _, vectors = _check(answer, texts, cell.encoding, dim, want_vectors=True)
        if problem:
            failed(f"warm-up: {problem}")
            continue
        first = (k % len(bodies)) * texts
        if reference is not None and vectors is not None and first + texts <= len(reference):
            cosines.append(_cosine_min(vectors, reference[first : first + texts]))
    if cosines:
        cell.warmup_min_cosine = min(cosines)
    if cell.errors >= args.warmup > 0:
        return cell  # nothing worked: no point in loading a broken server

    # Stop sending at C x --requests once --min-seconds have passed (so fast cells still run long
    # enough to mean something), at 10x that count regardless, or at --max-seconds.
    budget = args.requests * cell.concurrency
    hard_cap = 10 * budget
    tally = _Tally()

    async def one_client(client: httpx.AsyncClient) -> None:
        while tally.sent < hard_cap and cell.errors < MAX_ERRORS:
            now = time.perf_counter()
            if now >= deadline or (tally.sent >= budget and now >= enough):
                return
            body = bodies[(args.warmup + tally.sent) % len(bodies)]
            tally.sent += 1
            started = time.perf_counter()
            try:
                answer = await client.post(PATH, content=body)
            except httpx.HTTPError as exc:
                failed(_describe(exc))
                continue
            tally.last_done = time.perf_counter()
            problem, parsed, _ = _check(answer, texts, cell.encoding, dim, want_vectors=False)
            if problem:
                failed(problem)
                continue
            tally.latencies_ms.append((tally.last_done - started) * 1e3)
            for name in PHASES:
                value = answer.headers.get(name)
                if value is not None:
                    tally.phases_ms[name].append(float(value))
            tally.tokens += int(parsed.get("usage", {}).get("prompt_tokens", 0))

    counters = await _scrape(clients[0])
    server_cpu = server.cpu_seconds()
    client_cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + args.max_seconds
    enough = start + min(args.min_seconds, args.max_seconds)
    try:
        await asyncio.gather(
            *(one_client(clients[i % len(clients)]) for i in range(cell.concurrency))
        )
        cell.complete = True
    finally:  # on ctrl-C too: what finished so far is still worth reporting
        end = tally.last_done if tally.last_done > start else time.perf_counter()
        cell.seconds = end - start
        if cell.seconds > 0:
            cell.client_cores = (time.process_time() - client_cpu) / cell.seconds
            after = server.cpu_seconds()
            if server_cpu is not None and after is not None:
                cell.server_cores = (after - server_cpu) / cell.seconds
        _summarize(cell, tally)
    _batching(cell, counters, await _scrape(clients[0]))
    return cell


def _summarize(cell: Cell, tally: _Tally) -> None:
    cell.requests = tally.sent
    cell.ok = len(tally.latencies_ms)
    cell.texts = cell.ok * cell.texts_per_request
    cell.texts_per_s = cell.texts / cell.seconds if cell.seconds > 0 else 0.0
    if tally.latencies_ms:
        p50, p95, p99 = np.percentile(tally.latencies_ms, [50, 95, 99])
        cell.latency_ms = {
            "p50": float(p50),
            "p95": float(p95),
            "p99": float(p99),
            "max": float(max(tally.latencies_ms)),
        }
        cell.prompt_tokens_per_text = tally.tokens / cell.texts
    for name, values in tally.phases_ms.items():
        if values:
            cell.server_mean_ms[name] = float(np.mean(values))
            cell.server_median_ms[name] = float(np.median(values))


# -- report --


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


COLUMNS = (
    "c",
    "texts/req",
    "format",
    "requests",
    "errors",
    "texts/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "srv tok ms",
    "srv queue ms",
    "srv infer ms",
    "srv total ms",
    "batch",
    "pad",
    "busy",
    "engine t/s",
    "ratio",
    "cli cpu",
    "srv cpu",
)


def _row(cell: Cell) -> str:
    mean = cell.server_mean_ms
    lat = cell.latency_ms

    def num(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    values = [
        str(cell.concurrency),
        str(cell.texts_per_request),
        cell.encoding,
        str(cell.requests),
        str(cell.errors),
        num(cell.texts_per_s),
        num(lat.get("p50")),
        num(lat.get("p95")),
        num(lat.get("p99")),
        *(num(mean.get(name), 2) for name in PHASES),
        num(cell.batch_inputs),
        num(cell.padding, 2),
        num(cell.model_busy, 2),
        num(cell.engine_texts_per_s),
        num(cell.ratio, 2),
        num(cell.client_cores, 2),
        num(cell.server_cores, 2),
    ]
    return "| " + " | ".join(values) + " |"


def _summary(cells: list[Cell], engine: EngineBaseline | None) -> list[str]:
    lines = []
    if engine is None:
        return ["engine phase skipped (--no-engine): no ratios"]
    lines.append(
        f"engine, one text: {engine.single_ms:.2f} ms median of {engine.single_calls} calls"
    )
    for cell in cells:
        if cell.concurrency == 1 and cell.texts_per_request == 1 and cell.latency_ms:
            ratio = cell.latency_ms["p50"] / engine.single_ms
            verdict = "ok" if ratio <= ONE_TEXT_TARGET else "over target"
            lines.append(
                f"latency ratio, 1 x 1 {cell.encoding}: p50 {cell.latency_ms['p50']:.2f}"
                f" ms / engine {engine.single_ms:.2f} ms = {ratio:.2f} "
                f"(target <= {ONE_TEXT_TARGET}: {verdict}; one pair of phases minutes apart:"
                " `python -m bench onetext` alternates them)"
            )
    for cell in cells:
        if cell.concurrency == 32 and cell.texts_per_request == 32 and cell.ratio is not None:
            verdict = "ok" if cell.ratio >= 0.90 else "under target"
            lines.append(
                f"overhead ratio, 32 x 32 {cell.encoding}: {cell.texts_per_s:.1f} / "
                f"{cell.engine_texts_per_s:.1f} texts/s = {cell.ratio:.2f} "
                f"(target >= 0.90: {verdict})"
            )
    return lines


# -- driver --


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"model spec for the server and the engine (default: {DEFAULT_MODEL};"
        " with --url, the server's first model)",
    )
    parser.add_argument(
        "--url",
        help="load this running server instead of starting one "
        "(e.g. http://127.0.0.1:8000); it must be on this machine",
    )
    parser.add_argument("--api-key", help="Bearer key for --url (also EMBEDSERVE_API_KEYS)")
    parser.add_argument(
        "--concurrency",
        nargs="+",
        type=int,
        default=[1, 8, 32, 128],
        metavar="C",
        help="concurrent clients (default: 1 8 32 128)",
    )
    parser.add_argument(
        "--texts-per-request",
        nargs="+",
        type=int,
        default=[1, 32],
        metavar="T",
        help="texts in each request (default: 1 32)",
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["float", "base64"],
        choices=["float", "base64"],
        help="encoding_format (default: both)",
    )
    parser.add_argument(
        "--set",
        default="short",
        choices=SETS,
        help="text set from bench.texts (default: short, ~10 tokens)",
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=4096,
        help="distinct texts cycled through (at least 2 x the largest C x T)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=200,
        help="requests per client per cell: a cell sends C x this many, more if "
        "--min-seconds have not passed yet, never over 10x (default: 200)",
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=3.0,
        help="keep a cell sending at least this long, within the 10x cap (default: 3)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=20.0,
        help="stop sending after this long in a cell; requests in flight finish (default: 20)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="unmeasured requests, one at a time, before each cell (default: 5)",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="raw: a lean keep-alive HTTP/1.1 client (bench/rawhttp.py), so the numbers are the "
        "server's; httpx: what a Python app would use, ~1 ms of client CPU a request on the same "
        "cores (default: raw)",
    )
    parser.add_argument(
        "--shared-client",
        action="store_true",
        help="one httpx.AsyncClient with C connections for all tasks, instead of "
        "one client (one connection) per task; its pool costs O(C^2) CPU",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds one request may take (default: 300)"
    )
    parser.add_argument(
        "--engine-seconds",
        type=float,
        default=5.0,
        help="seconds of engine.embed() calls per in-flight size (default: 5)",
    )
    parser.add_argument(
        "--single",
        type=int,
        default=50,
        help="one-text engine calls for the latency baseline (default: 50)",
    )
    parser.add_argument("--no-engine", action="store_true", help="skip the engine phase")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime intra-op threads, engine and server "
        "(default: ONNX Runtime's choice, as `embedserve serve`)",
    )
    parser.add_argument(
        "--providers",
        default="cpu",
        help="ONNX Runtime providers, engine and server (default: cpu)",
    )
    parser.add_argument("--quantize", choices=["int8"], default=None)
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="engine and server batch budget (default: the engine's, 1024 on CPU)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `embedserve serve` argument, repeatable; write flags with "
        "'=': --server-arg=--max-batch-requests=64",
    )
    parser.add_argument(
        "--server-log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="the server's --log-level; info logs every request (default: warning)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for GET /ready == 200 (default: 180)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results here")
    return parser


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("concurrency", "texts_per_request"):
        bad = [v for v in getattr(args, name) if v < 1]
        if bad:
            parser.error(f"--{name.replace('_', '-')} values must be >= 1, got {bad}")
    for name in ("requests", "pool", "single"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.min_seconds < 0:
        parser.error(f"--min-seconds must be >= 0, got {args.min_seconds}")
    for name in ("max_seconds", "engine_seconds", "timeout", "start_timeout"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.url and args.server_arg:
        parser.error("--server-arg only applies to a server this bench starts, not to --url")


def _remote_model(url: str, headers: dict[str, str], timeout: float) -> str:
    _wait_ready(url.rstrip("/"), timeout, None, None)
    answer = httpx.get(url.rstrip("/") + "/v1/models", headers=headers, timeout=10, trust_env=False)
    if answer.status_code != 200:
        raise RuntimeError(
            f"GET {url}/v1/models answered {answer.status_code} "
            f"({answer.text[:200]}); pass --model, or --api-key if it needs one"
        )
    return str(answer.json()["data"][0]["id"])


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwind through the `finally` that stops the server


async def _load(
    args: argparse.Namespace,
    server: Server,
    cells: list[Cell],
    pool: list[str],
    headers: dict[str, str],
    engine: EngineBaseline | None,
) -> None:
    most = max(c.concurrency for c in cells)
    async with contextlib.AsyncExitStack() as stack:
        # httpcore's pool scans every waiting request against every connection whenever one
        # frees up (encode/httpx#3215): with one client for 64+ tasks the client, not the
        # server, runs out of CPU. Hence one client, one connection, per task by default.
        count, size = (1, most) if args.shared_client else (most, 1)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        if args.client == "raw":
            clients = [RawClient(server.url, headers) for _ in range(most)]
            for client in clients:
                stack.callback(client.close)
        else:
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=server.url,
                        headers=headers,
                        limits=limits,
                        timeout=httpx.Timeout(args.timeout),
                        trust_env=False,
                    )
                )
                for _ in range(count)
            ]
        dim = engine.dimension if engine else None
        print()
        print("| " + " | ".join(COLUMNS) + " |")
        print(
            "|" + "|".join("---" if name == "format" else "---:" for name in COLUMNS) + "|",
            flush=True,
        )
        bodies: dict[tuple[int, str], list[bytes]] = {}
        for cell in cells:
            if not server.alive():
                raise RuntimeError(
                    f"the server died (exit code {server.process.returncode}); "
                    f"its output ends with:\n{_tail(server.log)}"
                )
            key = (cell.texts_per_request, cell.encoding)
            if key not in bodies:
                bodies[key] = _bodies(pool, args.model, *key)
            if dim is None:  # --no-engine: learn the dimension from the first answer
                answer = await clients[0].post(PATH, content=bodies[key][0])
                problem, _, vectors = _check(
                    answer, cell.texts_per_request, cell.encoding, None, want_vectors=True
                )
                if problem:
                    raise RuntimeError(f"first request failed: {problem}")
                dim = vectors.shape[1]
            await run_cell(
                clients, server, cell, bodies[key], args, dim, engine.reference if engine else None
            )
            if engine is not None:
                cell.engine_texts_per_s = engine.texts_per_s[
                    cell.concurrency * cell.texts_per_request
                ]
                cell.ratio = cell.texts_per_s / cell.engine_texts_per_s
            print(_row(cell), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    signal.signal(signal.SIGTERM, _sigterm)

    key = args.api_key or next(
        (k.strip() for k in os.environ.get("EMBEDSERVE_API_KEYS", "").split(",") if k.strip()), None
    )
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    if args.model is None:
        try:
            args.model = (
                _remote_model(args.url, headers, args.start_timeout) if args.url else DEFAULT_MODEL
            )
        except (RuntimeError, httpx.HTTPError) as exc:
            sys.exit(f"bench http: {exc}")

    cells = [
        Cell(c, t, f)
        for c in args.concurrency
        for t in args.texts_per_request
        for f in args.formats
    ]
    sizes = sorted({c.concurrency * c.texts_per_request for c in cells})
    pool = make_texts(args.set, max(args.pool, 2 * sizes[-1]))
    references = min(len(pool), max(64, args.warmup * max(args.texts_per_request)))

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        ort_version = "?"
    meta = {
        "command": "python -m bench http " + shlex.join(sys.argv[2:] if argv is None else argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort_version,
        "model": args.model,
        "quantize": args.quantize,
        "threads": args.threads,
        "providers": args.providers,
        "max_batch_tokens": args.max_batch_tokens,
        "set": args.set,
        "pool": len(pool),
        "engine_method": "engine.embed() on chunks of C x T pool texts, one call after another",
    }
    print(f"command: {meta['command']}")
    print(
        f"date: {meta['date']}  cpu: {meta['cpu']}  cores: {meta['cores']}  "
        f"python {meta['python']}  onnxruntime {ort_version}"
    )
    print(
        f"model={args.model} quantize={args.quantize} threads={args.threads or 'ORT default'} "
        f"providers={args.providers} max_batch_tokens={args.max_batch_tokens or 'default'} "
        f"set={args.set} pool={len(pool)}",
        flush=True,
    )

    engine: EngineBaseline | None = None
    interrupted, failure = False, None
    try:
        if not args.no_engine:
            if args.url:
                print(
                    "note: --url: the engine phase runs here while that server sits idle; its "
                    "settings must match this bench's for the ratios to mean anything"
                )
            print("engine phase (no server running yet):", flush=True)
            engine = measure_engine(args, pool, sizes, references)
            gc.collect()  # the engine's session and arenas go before the server loads its own
            meta["engine_tokens_per_text"] = engine.tokens_per_text
        with running_server(args) as server:
            if server.command:
                print(f"server: {shlex.join(server.command)}", flush=True)
            meta["server_command"] = server.command or args.url
            asyncio.run(_load(args, server, cells, pool, headers, engine))
    except KeyboardInterrupt:
        interrupted = True
        print(
            "\ninterrupted (any server we started is stopped); results so far follow",
            file=sys.stderr,
        )
    except RuntimeError as exc:  # the server would not start, or died: say why, keep results
        failure = f"bench http: {exc}"

    done = [c for c in cells if c.requests or c.errors]
    print()
    for line in _summary(done, engine):
        print(line)
    for cell in done:
        if not cell.complete:
            print(
                f"cut short, {cell.concurrency} x {cell.texts_per_request} {cell.encoding}: "
                f"{cell.ok} requests in {cell.seconds:.1f}s (not in the table)"
            )
        for sample in cell.error_samples:
            print(f"error, {cell.concurrency} x {cell.texts_per_request} {cell.encoding}: {sample}")
        if cell.warmup_min_cosine is not None and cell.warmup_min_cosine < MIN_COSINE:
            # int8 graphs quantize activations per tensor, so a vector depends on its batch.
            why = " (int8: batch-dependent)" if args.quantize else ""
            print(
                f"warning, {cell.concurrency} x {cell.texts_per_request} {cell.encoding}: "
                f"server vectors differ from the engine's (min cosine "
                f"{cell.warmup_min_cosine:.6f}){why}"
            )
    if args.json:
        report = {
            "meta": meta,
            "engine": None
            if engine is None
            else {
                "single_ms": engine.single_ms,
                "single_calls": engine.single_calls,
                "texts_per_s": {str(k): v for k, v in engine.texts_per_s.items()},
                "dimension": engine.dimension,
                "tokens_per_text": engine.tokens_per_text,
            },
            "cells": [asdict(c) for c in done],
            "interrupted": interrupted,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if failure:
        print(failure, file=sys.stderr)
        sys.exit(1)
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
