"""Problem 6: partial headers, a Content-Length larger than what is sent and a partial chunked
body stayed open indefinitely; huge headers and 100,000 headers were accepted; bodies in flight
were unbounded. Each case is sent over a raw socket to a real `embedserve serve` started with
small limits."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from embedserve.server.http import BodyBudget

from ..server.conftest import wait_for
from .conftest import MODEL, cli_server, embed

SIZES = [
    "--max-header-bytes", "4096",
    "--max-headers", "20",
    "--max-body-bytes-in-flight", "3000000",
    "--max-connections", "30",
]  # fmt: skip
SHORT_TIMEOUTS = ["--header-timeout-seconds", "1", "--body-timeout-seconds", "1"]
# For the capacity tests: the connections they hold open must not time out while they count.
LONG_TIMEOUTS = ["--header-timeout-seconds", "120", "--body-timeout-seconds", "120"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with cli_server(tmp_path_factory.mktemp("http"), *SIZES, *SHORT_TIMEOUTS) as live:
        yield live


@pytest.fixture(scope="module")
def patient_server(tmp_path_factory):
    with cli_server(tmp_path_factory.mktemp("http-patient"), *SIZES, *LONG_TIMEOUTS) as live:
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


# What the kernel says of each loopback TCP socket tells the test what the server has done, where
# a sleep would only guess: /proc/net/tcp's states and queues, by port.
LISTEN, ESTABLISHED, CLOSE_WAIT = "0A", "01", "08"


def tcp_sockets() -> list[tuple[int, int, str, int, int]]:
    """(local port, remote port, state, bytes not yet acknowledged by the peer, bytes not yet
    read by the owner, or for a listener the connections not yet accepted) of each IPv4 socket."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state, queues = line.split()[1:5]
        tx, rx = (int(q, 16) for q in queues.split(":"))
        rows.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state, tx, rx))
    return rows


def read_by_server(server, socks: list[socket.socket]) -> None:
    """Until the server's event loop has read every byte sent on `socks` (none is left in the
    client's send queue or the server's receive queue), or has answered one of them; then one
    request answered on a fresh connection, so the callbacks that read them have run to their
    end (an answer they wrote has arrived)."""
    ports = {sock.getsockname()[1] for sock in socks}

    def all_read() -> bool:
        rows = [
            r
            for r in tcp_sockets()
            if r[2] == ESTABLISHED and server.port in r[:2] and ports & set(r[:2])
        ]
        return len(rows) == 2 * len(ports) and all(tx == rx == 0 for *_, tx, rx in rows)

    wait_for(lambda: all_read() or not all(unanswered(sock) for sock in socks))
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200


def accepted_by_server(server) -> None:
    """Until the server has accepted every connection made to it so far."""
    wait_for(
        lambda: any(
            (local, state, rx) == (server.port, LISTEN, 0)
            for local, _, state, _, rx in tcp_sockets()
        )
    )


def closed_by_server(server, sock: socket.socket) -> None:
    """Until the server has closed its end of `sock`'s connection (its protocol has seen the
    connection lost), after the client closed `sock`."""
    port = sock.getsockname()[1]
    sock.close()
    wait_for(
        lambda: (
            not any(
                (local, remote) == (server.port, port) and state in (ESTABLISHED, CLOSE_WAIT)
                for local, remote, state, _, _ in tcp_sockets()
            )
        )
    )


def unanswered(sock: socket.socket) -> bool:
    """The connection is open and the server has sent nothing on it."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    return False


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


def embeds(server, text: str) -> bool:
    return embed(server.url, {"model": MODEL, "input": text}).status_code == 200


def stream(server, declared: int, sent: int) -> socket.socket:
    """A connection that sends `sent` real bytes of a body of `declared` bytes, then stalls."""
    sock = connect(server)
    try:
        sock.sendall(POST + b"content-length: %d\r\n\r\n" % declared + b" " * sent)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before all of it was sent
    return sock


def test_slow_bodies_hold_at_most_half_the_budget(patient_server):
    """Bodies still arriving count as their bytes arrive, and may hold half of the 3 MB budget
    together: a second slow 1 MB upload gets 503, a whole request is still served, and an
    upload whose client hangs up gives its room back at once (this server's body timeout is
    120 s: no timeout frees it)."""
    server = patient_server
    first = stream(server, 1_000_001, 1_000_000)
    try:
        read_by_server(server, [first])
        with stream(server, 1_000_001, 1_000_000) as second:
            status, headers, body = read_response(second)
        assert (status, error_code(body)) == (503, "server_busy")
        assert headers["retry-after"] == "1"
        assert embed(server.url, {"model": MODEL, "input": "arrives whole"}).status_code == 200
    finally:
        closed_by_server(server, first)
    with stream(server, 1_000_001, 1_000_000) as third:
        read_by_server(server, [third])
        assert unanswered(third)  # stalled, not refused: the first's room came back


def test_body_budget_policy():
    """The whole budget for bodies, half of it for bodies still arriving, one body always."""
    budget = BodyBudget(100)
    assert budget.take(200, complete=False)  # alone: any size
    budget.give(200, 200)
    assert budget.take(50, complete=False) and not budget.take(1, complete=False)
    assert budget.take(50, complete=True)  # a body that ends here may use the other half
    assert not budget.take(1, complete=True)
    budget.settle(50)  # the slow one completed: its bytes are held, no longer arriving
    assert (budget.held, budget.arriving) == (100, 0)
    budget.give(100, 0)
    assert (budget.held, budget.arriving) == (0, 0)


def test_stalled_bodies_time_out_and_give_their_room_back(server):
    with connect(server) as sock:  # 3 MB declared, the whole cap, and never sent
        sock.sendall(POST + b"content-length: 3000000\r\n\r\n" + b" " * 1000)
        status, _, body = read_response(sock)
        assert (status, error_code(body)) == (408, "request_timeout")
    assert embeds(server, "room again")


def test_connections_over_the_cap_get_503(patient_server):
    idle = [connect(patient_server) for _ in range(30)]
    try:
        accepted_by_server(patient_server)  # the 30 count before the next one arrives
        response = httpx.post(
            patient_server.url + "/v1/embeddings", json={"model": MODEL, "input": "x"}, timeout=30
        )
        assert response.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: embeds(patient_server, "fine again"))


def test_normal_requests_still_work(server):
    response = embed(server.url, {"model": MODEL, "input": ["a", "b"]})
    assert response.status_code == 200, response.text
    # A body that arrives in pieces but in time is fine, and keep-alive reuse works.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(3):
            assert client.post("/v1/embeddings", json={"model": MODEL, "input": "x"}).is_success


# -- the body budget counts bytes that arrived, not bytes promised --

KEY = "sk-budget-test"
MAX_BODY = 16 * 1024 * 1024  # the default max_body_bytes; 16 of them fill the default budget
BODY_TIMEOUT = 120  # far longer than serving a few requests takes on any machine


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """Default body limits (16 MiB a body, 256 MiB in flight), a key, and a body timeout long
    enough for other clients to be served while bodies stall."""
    flags = ["--api-key", KEY, "--body-timeout-seconds", str(BODY_TIMEOUT)]
    with cli_server(tmp_path_factory.mktemp("budget"), *flags) as live:
        yield live


def keyed_post(path: str, declared: int) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n"
        % (path.encode(), KEY.encode(), declared)
    )


def test_promised_bodies_do_not_lock_others_out(keyed):
    """16 authenticated connections that send headers declaring 16 MiB each and then nothing
    used to take the whole 256 MiB budget: every POST on every route got 503 `server_busy`
    until their 408s. They hold nothing now."""
    stalled = []
    try:
        for _ in range(16):
            sock = socket.create_connection(("127.0.0.1", keyed.port), timeout=BODY_TIMEOUT + 10)
            sock.sendall(keyed_post("/v1/embeddings", MAX_BODY))
            stalled.append(sock)
        read_by_server(keyed, stalled)  # all 16 heads, each promising 16 MiB
        headers = {"authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=keyed.url, headers=headers, timeout=10) as client:
            embedded = client.post("/v1/embeddings", json={"model": MODEL, "input": "still served"})
            assert embedded.status_code == 200, embedded.text
            tokenized = client.post("/tokenize", json={"inputs": "still served"})
            assert tokenized.status_code == 200, tokenized.text
            tei = client.post("/embed", json={"inputs": "still served"})
            assert tei.status_code == 200, tei.text
        # Served while the 16 still stall: each open, unanswered (not refused, not timed out).
        assert all(unanswered(sock) for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()


def read_head_and_body(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response by its content-length, without waiting for the server to close."""
    head, body, _ = _read_one(sock, b"")
    return head, body


def _read_one(sock: socket.socket, data: bytes) -> tuple[bytes, bytes, bytes]:
    """The response that `data` (bytes received already) begins: its head, its body and the
    bytes after it, which begin the next response (a pipelined one may come in the same read)."""
    while b"\r\n\r\n" not in data:
        data += _received(sock, data)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += _received(sock, head + rest)
    return head, rest[:length], rest[length:]


def _received(sock: socket.socket, so_far: bytes) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:  # closed: say so, instead of reading nothing forever
        raise AssertionError(f"the server closed the connection after {so_far[:300]!r}")
    return chunk


def test_a_declared_body_over_the_limit_is_413_at_once(keyed):
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(keyed_post("/v1/embeddings", MAX_BODY + 1))
        head, body = read_head_and_body(sock)
    # Refused from the headers alone: no body byte was sent, and waiting for one would have
    # ended in the 408 of the body timeout, not a 413.
    assert head.startswith(b"HTTP/1.1 413 ")
    assert error_code(body) == "request_too_large"


# -- a request's head counts from its first byte, on a kept-alive connection too --

GET = b"GET /health HTTP/1.1\r\nhost: x\r\n"
OVERSIZED_HEAD = GET + b"x-big: " + b"a" * 6000  # over the 4096 bytes, unterminated, one read


def read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """The status lines of the next `count` responses, each read by its content-length (two
    pipelined answers may arrive in one read: the bytes after one are the next one's)."""
    lines, data = [], b""
    for _ in range(count):
        head, _, data = _read_one(sock, data)
        lines.append(head.split(b"\r\n", 1)[0])
    assert not data, f"more than {count} responses: {data[:300]!r}"
    return lines


def test_an_oversized_head_on_a_kept_alive_connection_gets_431(patient_server):
    """The read that began a later request on a kept-alive connection was not counted: this head
    waited for the header timeout (10 s by default; this server's is longer than the socket's)
    where on a fresh connection it got 431 at once."""
    with connect(patient_server) as sock:
        sock.sendall(GET + b"\r\n")
        assert read_responses(sock, 1) == [b"HTTP/1.1 200 OK"]
        sock.sendall(OVERSIZED_HEAD)
        status, headers, body = read_response(sock)
    assert (status, error_code(body), headers["connection"]) == (431, "headers_too_large", "close")


def test_an_oversized_head_pipelined_behind_a_request_gets_431(patient_server):
    """The same head in the read that carried the request before it (which may be answered or
    not: the refusal closes the connection)."""
    with connect(patient_server) as sock:
        sock.sendall(GET + b"\r\n" + OVERSIZED_HEAD)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status, _, rest = data.rsplit(b"HTTP/1.1 ", 1)[-1].partition(b" ")  # the last response
    assert (status, error_code(rest.partition(b"\r\n\r\n")[2])) == (b"431", "headers_too_large")


def test_pipelined_requests_are_served(patient_server):
    """Two requests in one read; and a head that begins after a 10 KB body in the same read and
    ends in the next: only its own bytes count against the 4096, not the body before it."""
    body = json.dumps({"model": MODEL, "input": "x", "user": "u" * 10_000}).encode()
    post = POST + b"content-length: %d\r\n\r\n" % len(body) + body
    with connect(patient_server) as sock:
        sock.sendall(post + GET + b"\r\n")
        assert read_responses(sock, 2) == [b"HTTP/1.1 200 OK"] * 2
        sock.sendall(post + GET)
        time.sleep(0.2)  # the rest of the second head in a read of its own
        sock.sendall(b"\r\n")
        assert read_responses(sock, 2) == [b"HTTP/1.1 200 OK"] * 2


def test_a_partial_head_on_a_kept_alive_connection_times_out_with_408(server):
    with connect(server) as sock:
        sock.sendall(GET + b"\r\n")
        assert read_responses(sock, 1) == [b"HTTP/1.1 200 OK"]
        sock.sendall(GET)  # within the limit, never ended: its clock starts at its first byte
        status, _, body = read_response(sock)
    assert (status, error_code(body)) == (408, "request_timeout")
