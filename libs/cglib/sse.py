"""Server-sent events, framed and split in one place.

The gateway speaks SSE on both sides of a stream: it reads a provider's stream (OpenAI
chunks, or Anthropic's named events), and writes OpenAI's chunks to the client; the mock
upstream writes both kinds. An event is lines of ``field: value`` ended by a blank line:

    event: message_start          (optional)
    data: {"type": "message_start", ...}

``frame`` writes one event, ``Splitter`` cuts a byte stream split anywhere into events
(``\\r\\n`` read as ``\\n``, even when the two arrive in separate reads), ``data`` reads
an event's data field and ``name`` its event name. ``DONE`` is OpenAI's last event.
"""

from __future__ import annotations

TERMINATOR = b"\n\n"
DONE = b"data: [DONE]" + TERMINATOR


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def frame(data: bytes | str, event: str | None = None) -> bytes:
    """One event: ``event: <event>`` if named, then ``data`` (one ``data:`` line per
    line of it), then the blank line that ends it."""
    lines = [b"event: " + event.encode()] if event else []
    lines += [b"data: " + line for line in _bytes(data).split(b"\n")]
    return b"\n".join(lines) + TERMINATOR


def end(event: bytes) -> bytes:
    """An event as ``Splitter`` gave it, ended again (to pass it on unchanged)."""
    return event + TERMINATOR


class Splitter:
    """Bytes in, split anywhere; complete events out, without their terminating blank line."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        *events, self._buffer = (self._buffer + data).replace(b"\r\n", b"\n").split(TERMINATOR)
        return events  # the event still arriving waits in the buffer (a trailing \r for its \n)

    def rest(self) -> bytes:
        """At the end of the stream: what came after the last complete event ("" if only whitespace)."""
        rest, self._buffer = self._buffer, b""
        return rest if rest.strip() else b""


def data(event: bytes) -> bytes | None:
    """The event's data (its ``data:`` lines joined by newlines, one leading space of each
    dropped), or None if it has none (a comment, a keep-alive)."""
    lines = [
        line[6:] if line.startswith(b"data: ") else line[5:] for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


def name(event: bytes) -> str:
    """The event's ``event:`` name ("" for an unnamed event)."""
    found = ""
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            found = line[6:].strip().decode("utf-8", "replace")
    return found


__all__ = ["DONE", "TERMINATOR", "Splitter", "data", "end", "frame", "name"]
