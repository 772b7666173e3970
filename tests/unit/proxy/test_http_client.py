"""The provider-side HTTP client against real sockets: raw asyncio servers on loopback
that answer exactly the bytes each case needs (keep-alive, chunked, close-delimited,
gzip, a connection dropped idle or mid-reply, silence, garbage, TLS)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvloop

from cg_devstack.certs import make_certs
from cg_proxy import http_client
from cg_proxy.http_client import BadReply, ConnectFailed, Disconnected, HttpClient

FAST = {"connect_s": 2.0, "read_s": 2.0}


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""


Answer = Callable[[Server, int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request (head and Content-Length body), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def answering(data: bytes, *, keep_open: bool = True) -> Answer:
    """An ``answer`` that writes ``data`` to every request (then closes, unless ``keep_open``)."""

    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return keep_open

    return answer


@asynccontextmanager
async def serving(
    answer: Answer,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Server]:
    """A server calling ``answer(server, n, reader, writer)`` for each request n on a
    connection; ``answer`` returns False to close the connection."""
    server = Server()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        writers.append(writer)
        n = 0
        try:
            while (request := await read_request(reader)) is not None:
                server.requests.append(request)
                if not await answer(server, n, reader, writer):
                    break
                n += 1
        except (ConnectionError, asyncio.CancelledError):  # the client left, or the test is over
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = srv.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}/v1/chat/completions"
    try:
        yield server
    finally:
        srv.close()
        for w in writers:
            w.close()
        await srv.wait_closed()


def reply(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


async def ok(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(reply(b'{"n": %d}' % n, "Content-Type: application/json", "X-Twice: a", "x-twice: b"))
    await writer.drain()
    return True


async def cancel_and_see_it_closed(
    client: HttpClient, work: Awaitable[object], closed: asyncio.Event, after_s: float
) -> None:
    """Cancels ``work`` after ``after_s``; the server must then see its connection closed,
    and nothing may be left in the pool."""
    task = asyncio.ensure_future(work)
    await asyncio.sleep(after_s)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(closed.wait(), 2)
    assert client.idle_connections() == 0


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    yield http
    await http.close()


async def test_replies_are_read_and_connections_reused(client: HttpClient) -> None:
    async with serving(ok) as server:
        for n in range(3):
            resp = await client.post(server.url, b'{"q": 1}', {"Authorization": "Bearer sk-x"}, **FAST)
            assert resp.status == 200 and await resp.read() == b'{"n": %d}' % n
            assert resp.headers.get("content-type") == "application/json"
            assert resp.headers.get("X-Twice") == "a, b" and "x-twice" in resp.headers
            resp.release()
        assert server.connections == 1
        request = server.requests[0]
        assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nAuthorization: Bearer sk-x\r\n" in request and request.endswith(b'\r\n\r\n{"q": 1}')


async def test_chunked_stream_arrives_in_order_and_gzip_is_undone(client: HttpClient) -> None:
    events = [b"data: %d\n\n" % i for i in range(50)]
    packed = gzip.compress(b"".join(events))

    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if n == 0:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n")
            for event in events:
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(reply(packed, "Content-Encoding: gzip"))
        await writer.drain()
        return True

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, **FAST)
        assert b"".join([piece async for piece in resp.content.iter_any()]) == b"".join(events)
        resp.release()
        resp = await client.post(server.url, b"{}", {}, **FAST)
        assert await resp.read() == b"".join(events)
        resp.release()
        assert server.connections == 1
        assert b"Accept-Encoding: gzip, deflate" in server.requests[0]


async def test_a_close_delimited_reply_ends_at_eof_and_is_not_reused(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        return False

    async with serving(answer) as server:
        for _ in range(2):
            resp = await client.post(server.url, b"{}", {}, **FAST)
            assert await resp.read() == b"all of it"
            resp.release()
        assert server.connections == 2 and client.idle_connections() == 0


async def test_an_idle_connection_the_server_closed_is_replaced_without_an_error(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(b"one"))  # keep-alive promised, then the server closes anyway
        await writer.drain()
        return False

    async with serving(answer) as server:
        for _ in range(3):
            resp = await client.post(server.url, b"{}", {}, **FAST)
            assert await resp.read() == b"one"
            resp.release()
            await asyncio.sleep(0.05)
        assert server.connections == 3 and len(server.requests) == 3  # each request sent once


async def test_a_reply_cut_off_mid_body_is_an_error_and_the_connection_is_dropped(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        return False

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, **FAST)
        with pytest.raises(Disconnected):
            await resp.read()
        resp.release()
        resp = await client.post(server.url, b"{}", {"Accept-Encoding": "identity"}, **FAST)
        with pytest.raises(Disconnected):
            async for _ in resp.content.iter_any():
                pass
        resp.release()
        assert client.idle_connections() == 0 and len(server.requests) == 2


async def test_silence_times_out_before_the_head_and_between_pieces(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
        await asyncio.sleep(5)
        return False

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, connect_s=2, read_s=0.2)
        pieces = resp.content.iter_any()
        assert await anext(pieces) == b"hello"
        with pytest.raises(TimeoutError):
            await anext(pieces)
        resp.release()
        with pytest.raises(TimeoutError):
            await client.post(server.url, b"{}", {}, connect_s=2, read_s=0.2)
        assert client.idle_connections() == 0


@pytest.mark.parametrize(
    "answer_bytes",
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", id="not-http"),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x00",
            id="protocol-switch",
        ),
    ],
)
async def test_what_is_not_an_http_reply_is_a_bad_reply(client: HttpClient, answer_bytes: bytes) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer_bytes)
        await writer.drain()
        await asyncio.sleep(1)
        return False

    async with serving(answer) as server:
        with pytest.raises(BadReply):
            await client.post(server.url, b"{}", {}, **FAST)
        assert client.idle_connections() == 0


async def test_an_informational_reply_is_skipped(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(b"real", status="201 Created"))
        await writer.drain()
        return True

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, **FAST)
        assert (resp.status, await resp.read()) == (201, b"real")
        resp.release()


async def test_a_cancelled_request_closes_its_connection(client: HttpClient) -> None:
    closed = asyncio.Event()

    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await reader.read()  # until the client closes
        closed.set()
        return False

    async with serving(answer) as server:
        await cancel_and_see_it_closed(client, client.post(server.url, b"{}", {}, **FAST), closed, after_s=0.1)


async def test_a_big_stream_read_slowly_arrives_whole(client: HttpClient) -> None:
    block = bytes(range(256)) * 256  # 64 KiB
    blocks = 40

    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(block) * blocks))
        for _ in range(blocks):
            writer.write(block)
            await writer.drain()
        return True

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, **FAST)
        received = bytearray()
        async for piece in resp.content.iter_any():
            received += piece
            await asyncio.sleep(0.001)
        resp.release()
        assert bytes(received) == block * blocks
        resp = await client.post(server.url, b"{}", {}, **FAST)  # the pooled connection reads on
        assert await resp.read() == block * blocks
        resp.release()
        assert server.connections == 1


async def test_a_header_that_would_split_the_request_is_refused(client: HttpClient) -> None:
    async with serving(ok) as server:
        with pytest.raises(ValueError):
            await client.post(server.url, b"{}", {"X-Api-Key": "k\r\nX-Injected: 1"}, **FAST)
        assert server.requests == []


async def test_nothing_listening_is_a_connect_failure(client: HttpClient) -> None:
    async with serving(ok) as server:
        url = server.url
    with pytest.raises(ConnectFailed):
        await client.post(url, b"{}", {}, **FAST)


async def test_tls_checks_the_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certs / "proxy.crt", certs / "proxy.key")
    trusting = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    async with serving(ok, tls=server_tls) as server:
        http = HttpClient(ssl_context=trusting)
        try:
            resp = await http.post(server.url, b"{}", {}, **FAST)
            assert await resp.read() == b'{"n": 0}'
            resp.release()
        finally:
            await http.close()
        stranger = HttpClient()  # the system's CAs do not know the dev CA
        try:
            with pytest.raises(ConnectFailed):
                await stranger.post(server.url, b"{}", {}, **FAST)
        finally:
            await stranger.close()


# ---- review: edge cases a production gateway meets


async def test_a_gzip_reply_cut_off_inside_its_framing_is_a_bad_reply(client: HttpClient) -> None:
    packed = gzip.compress(b"x" * 10_000 + bytes(range(256)) * 40)[:-20]  # the gzip trailer and some data missing

    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if n == 0:  # framed by Content-Length: complete for HTTP, cut off for gzip
            writer.write(reply(packed, "Content-Encoding: gzip"))
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n" + packed)
        await writer.drain()
        return False  # close-delimited: the close comes where the gzip stream is not over

    async with serving(answer) as server:
        for _ in range(2):
            resp = await client.post(server.url, b"{}", {}, **FAST)
            with pytest.raises(BadReply):
                await resp.read()
            resp.release()
        assert client.idle_connections() == 0


async def test_read_refuses_a_reply_over_the_cap_even_when_it_arrived_at_once(
    client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_client, "MAX_REPLY_BYTES", 1000)

    answer = answering(reply(b"a" * 5000))

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, **FAST)
        await asyncio.sleep(0.05)  # the whole reply is in before read() looks
        with pytest.raises(BadReply):
            await resp.read()
        resp.release()
        assert client.idle_connections() == 0


async def test_a_gzip_bomb_is_refused_before_it_is_inflated_whole(
    client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_client, "MAX_REPLY_BYTES", 1 << 20)
    bomb = gzip.compress(bytes(32 << 20))  # 32 MiB of zeros in ~32 KiB: one data_received

    answer = answering(reply(bomb, "Content-Encoding: gzip"))

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, **FAST)
        biggest = 0
        with pytest.raises(BadReply):
            async for piece in resp.content.iter_any():
                biggest = max(biggest, len(piece))
        resp.release()
        assert biggest <= 1 << 20


async def test_a_close_delimited_reply_ended_by_a_reset_is_not_complete(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe start of it")
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN
        return False

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, **FAST)
        with pytest.raises(Disconnected):
            await resp.read()
        resp.release()


@pytest.mark.parametrize(
    "answer_bytes, body, keep_open, connections",
    [
        pytest.param(  # the trailers disturb neither the reply nor the next one on the connection
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n",
            b"hello",
            True,
            1,
            id="chunked-trailers",
        ),
        pytest.param(  # an HTTP/1.0 server slow to close: its connection is never reused
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"ok",
            False,
            2,
            id="http10-not-reused",
        ),
    ],
)
async def test_two_replies_in_a_row(
    client: HttpClient, answer_bytes: bytes, body: bytes, keep_open: bool, connections: int
) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer_bytes)
        await writer.drain()
        if not keep_open:
            await asyncio.sleep(0.3)
        return keep_open

    async with serving(answer) as server:
        for _ in range(2):
            resp = await client.post(server.url, b"{}", {}, **FAST)
            assert await resp.read() == body
            resp.release()
        assert server.connections == connections


async def test_a_stream_read_on_after_release_never_sees_the_next_reply(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(b"reply %d" % n))
        await writer.drain()
        return True

    async with serving(answer) as server:
        first = await client.post(server.url, b"{}", {}, **FAST)
        await asyncio.sleep(0.05)
        pieces = first.content.iter_any()
        assert await anext(pieces) == b"reply 0"
        first.release()  # done: pooled, while the iterator is still open
        second = await client.post(server.url, b"{}", {}, **FAST)
        await asyncio.sleep(0.05)
        with pytest.raises(Disconnected):
            await anext(pieces)
        assert await second.read() == b"reply 1"
        second.release()


async def test_a_reply_before_the_whole_request_body_was_read(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        return False

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply(b"too large", "Connection: close", status="413 Payload Too Large"))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        resp = await client.post(f"http://127.0.0.1:{port}/", b"x" * (8 << 20), {}, **FAST)
        assert resp.status == 413
        resp.release()
    finally:
        srv.close()


async def test_an_ipv6_host_is_bracketed(client: HttpClient) -> None:
    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        assert request is not None
        got.append(request)
        writer.write(reply(b"v6"))
        await writer.drain()
        writer.close()

    try:
        srv = await asyncio.start_server(handle, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = srv.sockets[0].getsockname()[1]
    try:
        resp = await client.post(f"http://[::1]:{port}/x", b"{}", {}, **FAST)
        assert await resp.read() == b"v6"
        resp.release()
        assert b"\r\nHost: [::1]:%d\r\n" % port in got[0]
    finally:
        srv.close()


async def test_a_header_value_that_is_not_latin1_is_a_value_error(client: HttpClient) -> None:
    async with serving(ok) as server:
        with pytest.raises(ValueError):
            await client.post(server.url, b"{}", {"X-Api-Key": "kéy\u2028"}, **FAST)
        assert server.requests == []


async def test_bytes_on_an_idle_connection_take_it_out_of_the_pool(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(b"reply %d" % n))
        await writer.drain()
        if n == 0:  # then, unasked, the start of something else: the parser is left mid-reply
            await asyncio.sleep(0.02)
            writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 50\r\n\r\n")
            await writer.drain()
        return True

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, **FAST)
        assert await resp.read() == b"reply 0"
        resp.release()
        await asyncio.sleep(0.1)
        resp = await client.post(server.url, b"{}", {}, **FAST)
        assert (resp.status, await resp.read()) == (200, b"reply 0")  # on a new connection
        resp.release()
        assert server.connections == 2


async def test_a_stream_left_mid_way_closes_its_connection(client: HttpClient) -> None:
    closed = asyncio.Event()

    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()
        closed.set()
        return False

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, **FAST)

        async def pump() -> None:
            try:
                async for _ in resp.content.iter_any():
                    pass
            finally:
                resp.release()

        await cancel_and_see_it_closed(client, pump(), closed, after_s=0.05)


async def test_a_stream_paused_by_its_reader_longer_than_read_s_does_not_time_out(client: HttpClient) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: far past HIGH_WATER

    answer = answering(reply(body))

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, connect_s=1, read_s=0.2)
        got = bytearray()
        async for piece in resp.content.iter_any():
            got += piece
            if len(got) == len(piece):
                await asyncio.sleep(0.5)  # the reader is slow: the socket is paused meanwhile
        resp.release()
        assert bytes(got) == body
        resp = await client.post(server.url, b"{}", {}, connect_s=1, read_s=0.2)
        assert await resp.read() == body
        resp.release()
        assert server.connections == 1


async def test_early_hints_are_skipped(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + reply(b"real"))
        await writer.drain()
        return True

    async with serving(answer) as server:
        for _ in range(2):
            resp = await client.post(server.url, b"{}", {}, **FAST)
            assert (resp.status, await resp.read(), resp.headers.get("link")) == (200, b"real", None)
            resp.release()
        assert server.connections == 1


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding"])
async def test_a_header_the_client_writes_itself_is_refused(client: HttpClient, name: str) -> None:
    async with serving(ok) as server:
        with pytest.raises(ValueError):
            await client.post(server.url, b"{}", {name: "1"}, **FAST)
        assert server.requests == []


async def test_a_second_reply_in_the_same_bytes_is_not_mixed_into_the_first(client: HttpClient) -> None:
    answer = answering(reply(b"mine") + reply(b"stray", status="408 Request Timeout"))

    async with serving(answer) as server:
        resp = await client.post(server.url, b"{}", {}, **FAST)
        await asyncio.sleep(0.05)
        assert (resp.status, await resp.read()) == (200, b"mine")
        resp.release()
        assert client.idle_connections() == 0


@pytest.mark.xfail(
    strict=True,
    reason="asyncio's SSL layer calls eof_received for a bare TCP FIN as for a close_notify: a cut is not seen",
)
async def test_a_tls_close_delimited_reply_cut_without_close_notify_is_not_complete(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certs / "proxy.crt", certs / "proxy.key")

    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe start of it")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)  # a TCP FIN with no TLS close_notify
        return False

    async with serving(answer, tls=server_tls) as server:
        http = HttpClient(ssl_context=ssl.create_default_context(cafile=str(certs / "ca.crt")))
        try:
            resp = await http.post(server.url, b"{}", {}, **FAST)
            with pytest.raises(Disconnected):
                await resp.read()
            resp.release()
        finally:
            await http.close()


async def test_endless_headers_are_refused_before_the_timeout(client: HttpClient) -> None:
    async def answer(server: Server, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(2000):  # ~2 MB of headers and no end to them
            writer.write(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000))
            await writer.drain()
        await asyncio.sleep(5)
        return False

    async with serving(answer) as server:
        with pytest.raises(BadReply):
            await client.post(server.url, b"{}", {}, connect_s=1, read_s=1.5)


@pytest.mark.parametrize(
    "case",
    [
        test_replies_are_read_and_connections_reused,
        test_chunked_stream_arrives_in_order_and_gzip_is_undone,
        test_an_idle_connection_the_server_closed_is_replaced_without_an_error,
        test_silence_times_out_before_the_head_and_between_pieces,
        test_a_cancelled_request_closes_its_connection,
        test_a_big_stream_read_slowly_arrives_whole,
    ],
)
def test_the_same_on_uvloop(case: Callable[[HttpClient], Awaitable[None]]) -> None:
    """The proxy runs on uvloop, whose loop methods take fewer arguments than asyncio's."""

    async def run() -> None:
        http = HttpClient()
        try:
            await case(http)
        finally:
            await http.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())


def test_tls_on_uvloop(tmp_path: Path) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(test_tls_checks_the_certificate(tmp_path))
