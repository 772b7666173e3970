"""cg_proxy.server_protocol: what the app writes within one turn of the loop leaves in one
write; nothing is lost, reordered or held past that turn; and uvicorn serves through it
(keep-alive, streams, a closing connection) as through its own httptools protocol."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn

from cg_proxy.server_protocol import CorkedHttpToolsProtocol, CorkedTransport


class Recorder:
    """The transport under the cork: what reached it, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def write_eof(self) -> None:
        self.events.append("eof")

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.events.append("pause_reading")


def corked() -> tuple[CorkedTransport, Recorder]:
    inner = Recorder()
    return CorkedTransport(inner, asyncio.get_running_loop()), inner  # type: ignore[arg-type]


async def test_writes_of_one_turn_leave_together_and_in_order():
    t, inner = corked()
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(b"{}")
    assert inner.writes == [] and t.get_write_buffer_size() == 21
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    t.write(b"data: 1\n\n")  # a later turn: a write of its own, not held longer
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"data: 1\n\n"]


async def test_close_sends_what_is_held_first_and_abort_drops_it():
    t, inner = corked()
    t.write(b"last words")
    t.close()
    await asyncio.sleep(0)  # the flush the write scheduled finds nothing more
    assert (inner.writes, inner.events) == ([b"last words"], ["close"])

    t, inner = corked()
    t.write(b"head")
    t.write_eof()
    assert (inner.writes, inner.events) == ([b"head"], ["eof"])

    t, inner = corked()
    t.write(b"never sent")
    t.abort()
    await asyncio.sleep(0)
    assert (inner.writes, inner.events) == ([], ["abort"])


async def test_nothing_is_written_to_a_transport_that_closed_meanwhile():
    t, inner = corked()
    t.write(b"too late")
    inner.closing = True  # the peer went away before the loop turned
    await asyncio.sleep(0)
    assert inner.writes == []


async def test_the_rest_of_the_transport_is_the_one_beneath():
    t, inner = corked()
    t.pause_reading()
    assert inner.events == ["pause_reading"] and not t.is_closing()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for piece in (b"one ", b"two"):
            await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"ok":true}'
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": body})


def exchange(sock: socket.socket, request: bytes, until: bytes) -> bytes:
    sock.sendall(request)
    got = b""
    while until not in got:
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    return got


async def test_uvicorn_serves_keep_alive_streams_and_closes_through_it():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http=CorkedHttpToolsProtocol, lifespan="off", log_config=None))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:  # the socket listens already: a connection waits in its backlog until uvicorn accepts

        def client() -> list[bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                get = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
                first = exchange(sock, get, b'{"ok":true}')
                second = exchange(sock, get, b'{"ok":true}')  # the same connection, kept alive
                streamed = exchange(sock, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", b"0\r\n\r\n")
                closing = exchange(sock, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", b'{"ok":true}')
                assert sock.recv(1) == b""  # closed by the server once the answer was out
                return [first, second, streamed, closing]

        first, second, streamed, closing = await asyncio.to_thread(client)
        for answer in (first, second, closing):
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n" + b'{"ok":true}')
        assert b"transfer-encoding: chunked" in streamed and streamed.endswith(b"4\r\none \r\n3\r\ntwo\r\n0\r\n\r\n")
        assert b"connection: close" in closing
    finally:
        server.should_exit = True
        await serving
