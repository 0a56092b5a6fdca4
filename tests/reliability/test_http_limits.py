"""Problem 6: partial headers, a Content-Length larger than what is sent and a partial chunked
body stayed open indefinitely; huge headers and 100,000 headers were accepted; bodies in flight
were unbounded. Each case is sent over a raw socket to a real `embedserve serve` started with
small limits."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from .conftest import MODEL, cli_server, embed

FLAGS = [
    "--header-timeout-seconds", "1",
    "--body-timeout-seconds", "1",
    "--max-header-bytes", "4096",
    "--max-headers", "20",
    "--max-body-bytes-in-flight", "3000000",
    "--max-connections", "30",
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with cli_server(tmp_path_factory.mktemp("http"), *FLAGS) as live:
        yield live


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """Read until the server closes; a silent close reads as status 0."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    if not data:
        return 0, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


POST = b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"


def test_partial_headers_time_out_with_408(server):
    with connect(server) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\n")
        started = time.monotonic()
        status, headers, body = read_response(sock)
    assert (status, error_code(body), headers["connection"]) == (408, "request_timeout", "close")
    assert time.monotonic() - started < 10  # answered, not left open (was: open at 75 s)


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as sock:
        status, _, body = read_response(sock)
    assert (status, error_code(body)) == (408, "request_timeout")


def test_a_body_shorter_than_its_content_length_times_out_with_408(server):
    with connect(server) as sock:
        sock.sendall(POST + b"content-length: 1000\r\n\r\n" + b'{"model": "x", ')
        status, _, body = read_response(sock)
    assert (status, error_code(body)) == (408, "request_timeout")


def test_a_partial_chunked_body_times_out_with_408(server):
    with connect(server) as sock:
        sock.sendall(POST + b"transfer-encoding: chunked\r\n\r\n" + b'5\r\n{"mod\r\n')
        status, _, body = read_response(sock)
    assert (status, error_code(body)) == (408, "request_timeout")


def test_huge_headers_get_431(server):
    with connect(server) as sock:
        try:
            sock.sendall(POST + b"x-big: " + b"a" * 10_000_000 + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the 10 MB were sent
        status, _, body = read_response(sock)
    assert (status, error_code(body)) == (431, "headers_too_large")


def test_too_many_headers_get_431(server):
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(100_000))
    with connect(server) as sock:
        try:
            sock.sendall(POST + many + b"content-length: 2\r\n\r\n{}")
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_response(sock)
    assert (status, error_code(body)) == (431, "headers_too_large")


def test_bodies_in_flight_are_capped(server):
    held = []
    try:
        for _ in range(3):  # 3 x 1 MB declared: exactly the 3 MB cap
            sock = connect(server)
            sock.sendall(POST + b"content-length: 1000000\r\n\r\n" + b" " * 1000)
            held.append(sock)
        time.sleep(0.2)
        with connect(server) as sock:
            sock.sendall(POST + b"content-length: 1000000\r\n\r\n")
            status, headers, body = read_response(sock)
        assert (status, error_code(body)) == (503, "server_busy")
        assert headers["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
    # The stalled bodies time out (408) and give their room back.
    time.sleep(1.5)
    assert embed(server.url, {"model": MODEL, "input": "room again"}).status_code == 200


def test_connections_over_the_cap_get_503(server):
    idle = [connect(server) for _ in range(30)]
    try:
        time.sleep(0.2)
        response = httpx.post(
            server.url + "/v1/embeddings", json={"model": MODEL, "input": "x"}, timeout=10
        )
        assert response.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert embed(server.url, {"model": MODEL, "input": "fine again"}).status_code == 200


def test_normal_requests_still_work(server):
    response = embed(server.url, {"model": MODEL, "input": ["a", "b"]})
    assert response.status_code == 200, response.text
    # A body that arrives in pieces but in time is fine, and keep-alive reuse works.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(3):
            assert client.post("/v1/embeddings", json={"model": MODEL, "input": "x"}).is_success
