"""One write per response (server/coalesce.py), against a transport that records its writes."""

from __future__ import annotations

import asyncio

from embedserve.server.coalesce import CoalescingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_a_head_and_its_body_go_out_in_one_write():
    async def main() -> Recorder:
        recorder = Recorder()
        transport = CoalescingTransport(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(HEAD)
        assert recorder.writes == []
        transport.write(b"{}")
        await asyncio.sleep(0)
        assert transport.get_extra_info("peername") == "info:peername"  # passed through
        return recorder

    assert asyncio.run(main()).writes == [HEAD + b"{}"]


def test_a_head_without_a_body_goes_out_at_the_end_of_the_iteration():
    async def main() -> list[list[bytes]]:
        recorder = Recorder()
        transport = CoalescingTransport(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(HEAD)
        seen = [list(recorder.writes)]
        await asyncio.sleep(0)
        seen.append(list(recorder.writes))
        transport.write(b"chunk\r\n")  # a streamed body's later parts are written at once
        seen.append(list(recorder.writes))
        return seen

    assert asyncio.run(main()) == [[], [HEAD], [HEAD, b"chunk\r\n"]]


def test_close_writes_a_held_head_and_abort_drops_it():
    async def main() -> tuple[Recorder, Recorder]:
        loop = asyncio.get_running_loop()
        closed, aborted = Recorder(), Recorder()
        for recorder, end in ((closed, "close"), (aborted, "abort")):
            transport = CoalescingTransport(recorder, loop)  # type: ignore[arg-type]
            transport.write(HEAD)
            getattr(transport, end)()
        await asyncio.sleep(0)
        return closed, aborted

    closed, aborted = asyncio.run(main())
    assert closed.writes == [HEAD] and closed.closed
    assert aborted.writes == [] and aborted.aborted
