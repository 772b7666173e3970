"""A lean HTTP/1.1 client for the provider side.

Why not aiohttp: under ``make bench`` its ``ClientSession._request`` (URL objects, auto
headers, cookie and trace hooks, payload writers, per-request timeout contexts) was ~20%
of the proxy's CPU per request. The provider side needs much less: POST a body that is
already bytes to a fixed set of origins, over pooled keep-alive connections, and read the
reply whole or as it comes. This module does only that, on an ``asyncio.Protocol`` with
``httptools`` (llhttp, the parser uvicorn already uses for the requests it serves) doing
the parsing: status, headers, content-length, chunked and close-delimited bodies.

What a caller gets, and what it can rely on:

- ``HttpClient.post`` returns a ``Response`` once the status line and headers are in:
  ``status``, ``headers`` (case-insensitive ``get``), ``read()``, ``content.iter_any()``
  and ``release()``. ``release()`` must be called when done (it returns a finished
  connection to the pool and closes an unfinished one).
- Timeouts: ``connect_s`` bounds the TCP (and TLS) connect, ``read_s`` every wait for the
  next bytes of the reply (the same meaning as aiohttp's ``sock_read``). Both raise
  ``TimeoutError``.
- Every other failure is an ``UpstreamError`` (a ``ConnectionError``): the connect failed,
  the server broke or closed the connection before the reply was complete, the reply was
  not HTTP (or came with bytes past its end, or headers over ``MAX_HEADER_BYTES``), or
  it was larger than ``MAX_REPLY_BYTES`` when read whole (decompressed: a gzip bomb stops
  at the cap), or a compressed body was cut off.
- A pooled connection the server closed while it sat idle is noticed when the request
  fails before any byte of a reply came back: the request is then sent once more, on a
  new connection. Nothing else is retried here (``cg_proxy.upstream`` owns the policy).
- Replies compressed with gzip or deflate are decompressed, as aiohttp did.
- A stream is read with flow control: past ``HIGH_WATER`` bytes not yet taken by the
  reader, the socket is paused until the reader catches up.
- Header names and values with CR or LF are refused (``ValueError``) before anything is
  sent, so a configured value can never split the request; so are ``Host``,
  ``Content-Length`` and ``Transfer-Encoding``, which the client writes itself.
- It runs on asyncio's loop and on uvloop (the proxy's): only loop methods both have.
- No cookies are kept: one tenant's provider cookies can never reach another's request.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httptools

# An idle pooled connection older than this is closed instead of reused (servers close
# theirs after 5 s to a few minutes; a reused one the server closed is retried anyway).
KEEPALIVE_S = 15.0
# Idle connections kept per origin; more are closed when released.
MAX_IDLE_PER_ORIGIN = 256
# A reply read whole (``read()``) larger than this is refused: it bounds what one request
# can make the proxy hold. Streams are bounded by ``HIGH_WATER`` instead.
MAX_REPLY_BYTES = 64 * 1024 * 1024
HIGH_WATER = 256 * 1024
# The reply's header lines (and a chunked reply's trailers) together, at most.
MAX_HEADER_BYTES = 256 * 1024
USER_AGENT = "creditgate"

_Origin = tuple[str, str, int]  # scheme, host, port


class UpstreamError(ConnectionError):
    """The provider could not be reached, or its reply could not be read in full."""


class ConnectFailed(UpstreamError):
    pass


class Disconnected(UpstreamError):
    """The connection ended before the reply was complete."""


class BadReply(UpstreamError):
    """What came back was not a valid HTTP/1.1 reply, or too large."""


class Headers(dict[str, str]):
    """Reply headers, names lowercased; a repeated header's values joined with ", "."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class _Target:
    """A URL split once: its origin, the request line's target and the Host header."""

    __slots__ = ("origin", "head_prefix")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port or default_port
        host = parts.hostname
        host_header = f"[{host}]" if ":" in host else host
        if port != default_port:
            host_header = f"{host_header}:{port}"
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        _check_header("path", path)
        self.origin: _Origin = (parts.scheme, host, port)
        self.head_prefix = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")


def _check_header(name: str, value: str) -> None:
    if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
        raise ValueError(f"header {name!r} has a character that would split the request")


# Written by the client itself: a caller's own would be a second, conflicting one.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})


def _head(target: _Target, headers: Mapping[str, str], body_length: int) -> bytes:
    lines = [f"Content-Length: {body_length}\r\n"]
    names = set()
    for name, value in headers.items():
        _check_header(name, value)
        lowered = name.lower()
        if lowered in _OWN_HEADERS:
            raise ValueError(f"header {name!r} is written by the HTTP client itself")
        names.add(lowered)
        lines.append(f"{name}: {value}\r\n")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}\r\n")
    if "accept-encoding" not in names:
        lines.append("Accept-Encoding: gzip, deflate\r\n")
    lines.append("\r\n")
    return target.head_prefix + "".join(lines).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the reply being read on it, if any."""

    def __init__(self, client: HttpClient, origin: _Origin) -> None:
        self.client = client
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.header_items: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.head_done = False
        self.informational = False
        self.done = False
        self.keep_alive = False
        self.error: Exception | None = None
        self.received = False  # any byte of this request's reply
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.decoder: Any = None
        self.decoder_fed = False
        self.waiter: asyncio.Future[None] | None = None

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.done:  # past the end of the reply (idle in the pool, or not yet released): unasked for
            self._fail(BadReply("the provider sent bytes past the end of its reply"))
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(BadReply(f"the provider's reply is not valid HTTP/1.1 ({e})"))
        except Exception as e:  # a decoder error raised from a callback
            self._fail(BadReply(f"the provider's reply could not be decoded ({type(e).__name__})"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.client._forget(self)
        if self.done or self.error is not None:
            return
        if self.head_done and exc is None and self._close_delimited():  # a reset is no end
            self._complete(keep_alive=False)
            return
        self.error = Disconnected(
            "the provider closed the connection before its reply was complete"
            + (f" ({type(exc).__name__})" if exc else "")
        )
        self._wake()

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        if self.done:  # a second reply in the same bytes as the first: never asked for
            self._stop(BadReply("the provider sent bytes past the end of its reply"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            self._stop(BadReply(f"the provider's reply headers are larger than {MAX_HEADER_BYTES} bytes"))
        self.header_items.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.informational = True  # e.g. 100 Continue: the real reply follows
            return
        self.status = status
        self.head_done = True
        encoding = self._header(b"content-encoding")
        if encoding in (b"gzip", b"x-gzip", b"deflate"):
            self.decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib, told by the header
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.decoder is not None:
            self.decoder_fed = True
            room = MAX_REPLY_BYTES - self.buffered
            try:
                body = self.decoder.decompress(body, room + 1)  # a bomb inflates no further than the cap
            except zlib.error as e:
                self._stop(BadReply(f"the provider's compressed reply could not be decoded ({e})"))
            if len(body) > room:
                self._stop(BadReply(f"the provider's reply is larger than {MAX_REPLY_BYTES} bytes"))
            if not body:
                return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            self.header_items = []
            return
        self._complete(keep_alive=self.parser.should_keep_alive())

    # ---- the reply
    def _header(self, name: bytes) -> bytes | None:
        for key, value in self.header_items:
            if key.lower() == name:
                return value.strip().lower()
        return None

    def _close_delimited(self) -> bool:
        return self._header(b"content-length") is None and self._header(b"transfer-encoding") is None

    def _complete(self, *, keep_alive: bool) -> None:
        if self.decoder is not None:
            try:
                tail = self.decoder.flush()
            except zlib.error:
                self._fail(BadReply("the provider's compressed reply is cut off"))
                return
            if not self.decoder.eof and self.decoder_fed:
                self._fail(BadReply("the provider's compressed reply is cut off"))
                return
            if tail:
                self.chunks.append(tail)
                self.buffered += len(tail)
        self.done = True
        self.keep_alive = keep_alive and not self.lost
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    def _stop(self, error: Exception) -> NoReturn:
        """From a parser callback: fails the reply and stops the parser (``feed_data`` raises;
        ``data_received`` keeps this first error)."""
        self._fail(error)
        raise error

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @staticmethod
    def _time_out(waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    async def wait(self, timeout_s: float) -> None:
        """Until something happens on the reply (bytes, its end, an error) or ``timeout_s``."""
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout_s, self._time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def take(self) -> bytes:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        self.buffered = 0
        if self.paused and self.transport is not None and not self.lost:
            self.paused = False
            self.transport.resume_reading()
        return data

    def headers(self) -> Headers:
        headers = Headers()
        for name, value in self.header_items:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{dict.__getitem__(headers, key)}, {text}" if dict.__contains__(headers, key) else text
        return headers

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = True


class Response:
    """A reply whose status line and headers are in; the body is read on demand."""

    def __init__(self, conn: _Connection, read_s: float) -> None:
        self._conn: _Connection | None = conn
        self._read_s = read_s
        self.status = conn.status
        self.headers = conn.headers()
        self.content = self

    def _open(self) -> _Connection:
        if self._conn is None:
            raise Disconnected("the reply was already released")
        return self._conn

    async def read(self) -> bytes:
        conn = self._open()
        while not conn.done:
            if conn.error is not None:
                raise conn.error
            if conn.buffered > MAX_REPLY_BYTES:
                conn.close()
                raise BadReply(f"the provider's reply is larger than {MAX_REPLY_BYTES} bytes")
            if conn.paused and conn.transport is not None:
                conn.paused = False  # reading whole: no flow control, the cap bounds it
                conn.transport.resume_reading()
            await conn.wait(self._read_s)
        if conn.buffered > MAX_REPLY_BYTES:
            conn.close()
            raise BadReply(f"the provider's reply is larger than {MAX_REPLY_BYTES} bytes")
        return conn.take()

    async def iter_any(self) -> AsyncIterator[bytes]:
        conn = self._open()
        while True:
            if self._conn is not conn:  # released meanwhile: the connection may carry another reply now
                raise Disconnected("the reply was already released")
            if conn.chunks:
                yield conn.take()
                continue
            if conn.done:
                return
            if conn.error is not None:
                raise conn.error
            await conn.wait(self._read_s)

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.done and conn.keep_alive and not conn.lost:
            if conn.paused and conn.transport is not None:
                conn.paused = False
                conn.transport.resume_reading()
            conn.client._put(conn)  # an unread rest of the reply is dropped at the next exchange
        else:
            conn.close()


class HttpClient:
    """Pooled keep-alive connections per origin (scheme, host, port); no limit on their number."""

    def __init__(self, *, keepalive_s: float = KEEPALIVE_S, ssl_context: ssl.SSLContext | None = None) -> None:
        self.keepalive_s = keepalive_s
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._ssl = ssl_context  # None: the system's trusted CAs, made on the first https connect
        self._closed = False

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            target = _Target(url)
            if len(self._targets) < 4096:  # configured upstreams: a handful of URLs
                self._targets[url] = target
        return target

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, connect_s: float, read_s: float
    ) -> Response:
        """Sends ``body`` and returns once the reply's status line and headers are in."""
        if self._closed:
            raise UpstreamError("the HTTP client is closed")
        target = self._target(url)
        request = _head(target, headers, len(body)) + body
        conn = self._pooled(target.origin)
        if conn is not None:
            try:
                return await self._exchange(conn, request, read_s)
            except Disconnected:
                if conn.received:
                    raise
                # the server had closed this idle connection: the request never reached it
        conn = await self._connect(target.origin, connect_s)
        return await self._exchange(conn, request, read_s)

    async def _exchange(self, conn: _Connection, request: bytes, read_s: float) -> Response:
        conn._reset()
        assert conn.transport is not None
        if conn.lost:  # closed before a byte was sent: the caller may send it again elsewhere
            raise Disconnected("the connection to the provider closed")
        try:
            conn.transport.write(request)
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(read_s)
        except BaseException:
            conn.close()  # cancelled, timed out or broken: the connection is in an unknown state
            raise
        return Response(conn, read_s)

    async def _connect(self, origin: _Origin, connect_s: float) -> _Connection:
        scheme, host, port = origin
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        loop = asyncio.get_running_loop()
        try:
            # no happy_eyeballs_delay: uvloop's create_connection (the proxy's loop) has none
            async with asyncio.timeout(connect_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                )
        except TimeoutError:
            raise
        except OSError as e:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectFailed(f"cannot connect to {host}:{port} ({type(e).__name__}: {e})") from None
        return conn

    def _pooled(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        oldest_kept = time.monotonic() - self.keepalive_s
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if conn.lost or transport is None or transport.is_closing() or conn.idle_since < oldest_kept:
                conn.close()
                continue
            return conn
        return None

    def _put(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    def idle_connections(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
