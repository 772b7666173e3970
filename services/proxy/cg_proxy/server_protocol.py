"""uvicorn's HTTP/1.1 protocol (httptools), with the writes of one loop turn sent together.

uvicorn writes a response's head as soon as the app sends ``http.response.start`` and its
body when the app sends it: two ``send(2)`` calls and two TCP segments for every JSON
answer, though the proxy sends both in the same step. ``CorkedTransport`` keeps what is
written until the loop turns (``call_soon``), then hands it on in one write: the client
gets head and body in one segment, and the proxy pays for one send instead of two. A
stream's events still leave as they come (each at the end of the step that relayed it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """A transport whose writes made within one turn of the loop leave in one write.
    Closing (or ``write_eof``) first sends what is held; ``abort`` drops it."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self._flush)
        else:
            self._held.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held or ()))

    def __getattr__(self, name: str) -> Any:  # the rest (is_closing, pause_reading, ...) as is
        return getattr(self._transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol on a ``CorkedTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
