"""Soak: mixed valid, invalid and abusive traffic against one server; RSS every 30 s.

    python -m bench soak --minutes 10 [--clients 6] [--rerank-share 0.3]

Each client picks, at random, one of: a valid request (1 to 64 texts of mixed lengths), an
invalid one (bad JSON, raw invalid UTF-8, an unknown field, an empty input, a wrong type), or an
abusive one (a 15 MB body of commas, a 5 MB word, a body over the size cap, partial headers,
an upload aborted halfway, a client that hangs up while queued), at 70 / 20 / 10 %.

With `--rerank-share S`, the server also serves a cross-encoder (`--reranker`, by default
bench/cross_encoder.py's) and that share of requests goes to its routes, in the same 70 / 20 / 10
mix: valid ranks of 1 to 64 documents on /v1/rerank, /v2/rerank, TEI's /rerank and /v1/score;
invalid bodies (no query, no documents, an unknown field or model, top_n -1, both `texts` and
`documents`, bad JSON, invalid UTF-8); abuse (a 5 MB document, 1,000 documents of 16 KB, 1,001
documents, partial headers, an aborted upload, a hang-up while queued).

The server's RSS (/proc/PID/status) is printed every 30 s; the run fails (exit 1) if any reading
after the first minute is more than 10 % above the reading at the first minute, or if any answer
was a 5xx (the first body of each is printed).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.cross_encoder import QUERIES, RERANKER, model_flag
from bench.serving import serve
from bench.texts import make_texts

MODEL = "all-MiniLM-L6-v2"
RERANK_ROUTES = ["/v1/rerank", "/v2/rerank", "/rerank", "/v1/score"]
_ONE = {"model": RERANKER, "query": "q", "documents": ["a"]}
INVALID_RERANKS = [
    *(
        json.dumps(body).encode()
        for body in (
            {"model": RERANKER, "documents": ["a"]},  # no query
            {**_ONE, "documents": []},
            {**_ONE, "k": 1},  # an unknown field
            {**_ONE, "model": "nope"},  # 404
            {**_ONE, "top_n": -1},
            {**_ONE, "texts": ["a"]},  # both shapes at once
            {**_ONE, "documents": [1, "a"]},
        )
    ),
    b'{"query": "\xff", "documents": ["a"]}',  # invalid UTF-8
    b'{"query": ',  # cut short
]
SAMPLE_SECONDS = 30.0
BASELINE_SECONDS = 60.0
GROWTH = 0.10


def _raw(port: int, payload: bytes, *, read: bool = True, timeout: float = 20.0) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            if read:
                while sock.recv(65536):
                    pass
        except OSError:
            pass


@dataclass(frozen=True)
class Abuse:
    """The big bodies, built once and shared by every client (they are only read)."""

    commas: bytes
    word: bytes
    big_document: bytes
    many_large_documents: bytes
    too_many_documents: bytes

    @classmethod
    def build(cls) -> Abuse:
        word = "".join(random.Random(1).choices("ABCDEFabcdef0123456789+/", k=5_000_000))
        rerank = {"model": RERANKER, "query": QUERIES[0]}
        return cls(
            commas=json.dumps({"model": MODEL, "input": ["," * 8000] * 2000}).encode(),
            word=json.dumps({"model": MODEL, "input": word}).encode(),
            big_document=json.dumps({**rerank, "documents": [word]}).encode(),
            # 16 MB of text, just under the body cap: the character limits must refuse it.
            many_large_documents=json.dumps({**rerank, "documents": ["x " * 8000] * 1000}).encode(),
            too_many_documents=json.dumps({**rerank, "documents": ["a"] * 1001}).encode(),
        )


class Soak:
    def __init__(
        self, url: str, port: int, seed: int, abuse: Abuse, rerank_share: float = 0.0
    ) -> None:
        self.url = url
        self.port = port
        self.rng = random.Random(seed)
        self.texts = make_texts("mix", 2048, seed=seed)
        self.statuses: Counter[str] = Counter()
        self.server_errors: dict[str, str] = {}  # "route status" -> the first body
        self.lock = threading.Lock()
        self.abuse = abuse
        self.rerank_share = rerank_share

    def count(self, what: str) -> None:
        with self.lock:
            self.statuses[what] += 1

    def post(
        self,
        client: httpx.Client,
        content: bytes,
        timeout: float = 60.0,
        path: str = "/v1/embeddings",
    ) -> None:
        prefix = "" if path == "/v1/embeddings" else "rerank "
        try:
            response = client.post(
                path,
                content=content,
                timeout=timeout,
                headers={"content-type": "application/json"},
            )
            self.count(f"{prefix}{response.status_code}")
            if response.status_code >= 500:
                with self.lock:
                    self.server_errors.setdefault(
                        f"{path} {response.status_code}",
                        f"request {content[:200]!r} -> {response.text[:500]!r}",
                    )
        except httpx.TimeoutException:
            self.count(f"{prefix}client timeout")
        except httpx.TransportError as exc:
            self.count(f"{prefix}{type(exc).__name__}")

    def one(self, client: httpx.Client) -> None:
        rng = self.rng
        kind = rng.choices(["valid", "invalid", "abusive"], weights=[70, 20, 10])[0]
        if rng.random() < self.rerank_share:
            self.one_rerank(client, kind)
        elif kind == "valid":
            n = rng.choice([1, 4, 8, 32, 64])
            start = rng.randrange(len(self.texts) - n)
            body = {"model": MODEL, "input": self.texts[start : start + n]}
            if rng.random() < 0.3:
                body["encoding_format"] = "base64"
            self.post(client, json.dumps(body).encode())
        elif kind == "invalid":
            self.post(
                client,
                rng.choice(
                    [
                        b'{"model": "all-MiniLM-L6-v2", "input": "\xff"}',
                        b'{"model": "all-MiniLM-L6-v2", "input": [1, "a"]}',
                        b'{"model": "all-MiniLM-L6-v2", "input": []}',
                        b'{"model": "all-MiniLM-L6-v2", "input": "a", "temperature": 1}',
                        b'{"model": "all-MiniLM-L6-v2", "input": ',
                        b"[1, 2, 3]",
                    ]
                ),
            )
        else:
            what = rng.choice(
                ["commas", "word", "too big", "partial headers", "aborted upload", "hang up"]
            )
            self.count(f"abuse: {what}")
            if what == "commas":
                self.post(client, self.abuse.commas)
            elif what == "word":
                self.post(client, self.abuse.word)
            elif what == "too big":
                self.post(client, b" " * (17 * 1024 * 1024))
            elif what == "partial headers":
                _raw(self.port, b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\n", timeout=30)
            elif what == "aborted upload":
                _raw(
                    self.port,
                    b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-length: "
                    b"4000000\r\n\r\n" + b" " * 2_000_000,
                    read=False,
                )
            else:
                body = {"model": MODEL, "input": self.texts[:256]}
                try:
                    client.post("/v1/embeddings", json=body, timeout=0.2)
                except httpx.TransportError:
                    pass

    def one_rerank(self, client: httpx.Client, kind: str) -> None:
        rng = self.rng
        route = rng.choice(RERANK_ROUTES)
        query = rng.choice(QUERIES)
        if kind == "valid":
            n = rng.choice([1, 4, 16, 64])
            start = rng.randrange(len(self.texts) - n)
            docs = self.texts[start : start + n]
            body: dict[str, object]
            if route == "/v1/score":
                body = {"model": RERANKER, "text_1": query, "text_2": docs}
            elif route == "/rerank":
                body = {"query": query, "texts": docs, "return_text": rng.random() < 0.3}
            else:
                body = {"model": RERANKER, "query": query, "documents": docs}
                if rng.random() < 0.5:
                    body["top_n"] = rng.randint(1, n)
                if rng.random() < 0.3:
                    body["return_documents"] = True
            self.post(client, json.dumps(body).encode(), path=route)
        elif kind == "invalid":
            route = rng.choice(RERANK_ROUTES[:3])
            self.post(client, rng.choice(INVALID_RERANKS), path=route)
        else:
            what = rng.choice(
                [
                    "5 MB document",
                    "1,000 x 16 KB documents",
                    "1,001 documents",
                    "partial headers",
                    "aborted upload",
                    "hang up",
                ]
            )
            self.count(f"rerank abuse: {what}")
            if what == "5 MB document":
                self.post(client, self.abuse.big_document, path="/v1/rerank")
            elif what == "1,000 x 16 KB documents":
                self.post(client, self.abuse.many_large_documents, path="/v1/rerank")
            elif what == "1,001 documents":
                self.post(client, self.abuse.too_many_documents, path="/v2/rerank")
            elif what == "partial headers":
                _raw(self.port, b"POST /v1/rerank HTTP/1.1\r\nhost: x\r\n", timeout=30)
            elif what == "aborted upload":
                _raw(
                    self.port,
                    b"POST /v1/rerank HTTP/1.1\r\nhost: x\r\ncontent-length: "
                    b"4000000\r\n\r\n" + b" " * 2_000_000,
                    read=False,
                )
            else:
                body = {"model": RERANKER, "query": query, "documents": self.texts[:256]}
                try:
                    client.post("/v1/rerank", json=body, timeout=0.2)
                except httpx.TransportError:
                    pass


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument(
        "--rerank-share",
        type=float,
        default=0.0,
        help="share of requests sent to the rerank and score routes (0 to 1)",
    )
    parser.add_argument(
        "--reranker",
        type=Path,
        help="cross-encoder folder for --rerank-share (default: bench/cross_encoder.py's)",
    )
    parser.add_argument(
        "serve_flags", nargs=argparse.REMAINDER, help="after --, flags for `embedserve serve`"
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.rerank_share <= 1.0:
        parser.error(f"--rerank-share must be between 0 and 1, not {args.rerank_share}")
    flags = [f for f in args.serve_flags if f != "--"]
    seconds = args.minutes * 60
    models = ["--model", MODEL]
    if args.rerank_share > 0:
        models += ["--model", model_flag(args.reranker)]
    abuse = Abuse.build()

    with serve([*models, "--log-level", "warning", *flags]) as server:
        port = int(server.url.rsplit(":", 1)[1])
        stop = threading.Event()
        soaks = [
            Soak(server.url, port, seed, abuse, args.rerank_share) for seed in range(args.clients)
        ]

        def client_loop(soak: Soak) -> None:
            with httpx.Client(base_url=server.url) as client:
                while not stop.is_set():
                    soak.one(client)

        threads = [threading.Thread(target=client_loop, args=(s,), daemon=True) for s in soaks]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        readings: list[tuple[float, int]] = []
        print("| elapsed s | RSS MB | VmHWM MB | requests so far |")
        print("|---|---|---|---|")
        next_sample = started
        while True:
            now = time.monotonic()
            if now >= next_sample:
                rss = server.status_kb("VmRSS")
                readings.append((now - started, rss))
                total = sum(sum(s.statuses.values()) for s in soaks)
                print(
                    f"| {now - started:.0f} | {rss / 1024:.0f} | "
                    f"{server.status_kb('VmHWM') / 1024:.0f} | {total} |",
                    flush=True,
                )
                next_sample += SAMPLE_SECONDS
            if now - started >= seconds:
                break
            time.sleep(min(1.0, max(0.0, next_sample - now)))
        stop.set()
        for thread in threads:
            thread.join(90)

    statuses: Counter[str] = Counter()
    server_errors: dict[str, str] = {}
    for soak in soaks:
        statuses.update(soak.statuses)
        server_errors = {**soak.server_errors, **server_errors}
    print(f"\nserver log: {server.log}")
    print("answers:", dict(sorted(statuses.items())))
    baseline = next((rss for t, rss in readings if t >= BASELINE_SECONDS), None)
    failed = False
    if baseline is None:
        print("too short to judge growth: run at least 1.5 minutes")
    else:
        worst = max(rss for t, rss in readings if t >= BASELINE_SECONDS)
        growth = worst / baseline - 1
        print(
            f"RSS at 1 min {baseline / 1024:.0f} MB, highest after {worst / 1024:.0f} MB "
            f"({100 * growth:+.1f} %, limit +{100 * GROWTH:.0f} %)"
        )
        failed = growth > GROWTH
    five_xx = sum(n for key, n in statuses.items() if key.rsplit(" ", 1)[-1].startswith("5"))
    print(f"5xx answers: {five_xx}")
    for where, what in sorted(server_errors.items()):
        print(f"first {where}: {what}")
    if five_xx:
        failed = True
    print("FAIL" if failed else "PASS")
    sys.exit(1 if failed else 0)
