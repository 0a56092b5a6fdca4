"""Soak: mixed valid, invalid and abusive traffic against one server; RSS every 30 s.

    python -m bench soak --minutes 10 [--clients 6]

Each client picks, at random, one of: a valid request (1 to 64 texts of mixed lengths), an
invalid one (bad JSON, raw invalid UTF-8, an unknown field, an empty input, a wrong type), or an
abusive one (a 15 MB body of commas, a 5 MB word, a body over the size cap, partial headers,
an upload aborted halfway, a client that hangs up while queued). The server's RSS
(/proc/PID/status) is printed every 30 s; the run fails (exit 1) if any reading after the first
minute is more than 10 % above the reading at the first minute, or if any answer was a 500.
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

import httpx

from bench.serving import serve
from bench.texts import make_texts

MODEL = "all-MiniLM-L6-v2"
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


class Soak:
    def __init__(self, url: str, port: int, seed: int) -> None:
        self.url = url
        self.port = port
        self.rng = random.Random(seed)
        self.texts = make_texts("mix", 2048, seed=seed)
        self.statuses: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.commas = json.dumps({"model": MODEL, "input": ["," * 8000] * 2000}).encode()
        word = "".join(random.Random(1).choices("ABCDEFabcdef0123456789+/", k=5_000_000))
        self.word = json.dumps({"model": MODEL, "input": word}).encode()

    def count(self, what: str) -> None:
        with self.lock:
            self.statuses[what] += 1

    def post(self, client: httpx.Client, content: bytes, timeout: float = 60.0) -> None:
        try:
            response = client.post(
                "/v1/embeddings",
                content=content,
                timeout=timeout,
                headers={"content-type": "application/json"},
            )
            self.count(str(response.status_code))
        except httpx.TimeoutException:
            self.count("client timeout")
        except httpx.TransportError as exc:
            self.count(type(exc).__name__)

    def one(self, client: httpx.Client) -> None:
        rng = self.rng
        kind = rng.choices(["valid", "invalid", "abusive"], weights=[70, 20, 10])[0]
        if kind == "valid":
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
                self.post(client, self.commas)
            elif what == "word":
                self.post(client, self.word)
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


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument(
        "serve_flags", nargs=argparse.REMAINDER, help="after --, flags for `embedserve serve`"
    )
    args = parser.parse_args(argv)
    flags = [f for f in args.serve_flags if f != "--"]
    seconds = args.minutes * 60

    with serve(["--model", MODEL, "--log-level", "warning", *flags]) as server:
        port = int(server.url.rsplit(":", 1)[1])
        stop = threading.Event()
        soaks = [Soak(server.url, port, seed) for seed in range(args.clients)]

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
    for soak in soaks:
        statuses.update(soak.statuses)
    print("\nanswers:", dict(sorted(statuses.items())))
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
    if statuses.get("500"):
        print(f"{statuses['500']} answers were 500")
        failed = True
    print("FAIL" if failed else "PASS")
    sys.exit(1 if failed else 0)
