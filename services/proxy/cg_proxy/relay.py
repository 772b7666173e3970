"""Streaming relay: reads the provider's SSE stream in a task of its own and hands
events to the client through a queue.

The reader does not depend on the client: when the client disconnects, the reader
keeps going until the provider's usage chunk arrives, so the request is billed for
what the provider really produced. The proxy always asks the provider for the usage
chunk; it is passed on only when the client asked for it too.

Only chunks that name ``usage`` are parsed as they pass; the others are kept as they
came and parsed at the end only if the provider never reported usage (then their
output is counted for a marked estimate). The events of one network read reach the
client as one write.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

import orjson
from starlette.types import Receive, Send

from cg_proxy.providers.base import UpstreamResponse
from cg_proxy.token_usage import Usage, estimate, usage_from
from cglib import sse
from creditgate.events.v1 import events_pb2

log = logging.getLogger(__name__)

# Called once, when the provider's stream has ended: the usage to bill and how it ended.
OnDone = Callable[[Usage, events_pb2.UsageOutcome.ValueType], None]


class StreamRelay:
    def __init__(self, resp: UpstreamResponse, client_wants_usage: bool, prompt_bound: int, on_done: OnDone) -> None:
        self.resp = resp
        self.client_wants_usage = client_wants_usage
        self.prompt_bound = prompt_bound
        self.on_done = on_done
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.client_gone = False
        self.usage: Usage | None = None
        self._unparsed: list[bytes] = []  # payloads without usage, parsed only for an estimate

    def output_chars(self) -> int:
        """Characters of output in the chunks seen, for an estimate when usage never came."""
        chars = 0
        for payload in self._unparsed:
            try:
                chunk = json.loads(payload)
            except ValueError:
                continue
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            for choice in choices if isinstance(choices, list) else ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if not isinstance(delta, dict):
                    continue
                content = delta.get("content")
                if isinstance(content, str):
                    chars += len(content)
                for call in delta.get("tool_calls") or ():
                    chars += len(json.dumps(call.get("function") or {}) if isinstance(call, dict) else "")
        return chars

    def _inspect(self, event: bytes) -> bytes | None:
        """Returns the event to forward (or None to drop it), noting usage and output."""
        data = sse.data(event)
        if data is None:
            return event  # comments, keep-alives
        payload = data.strip()
        if payload == b"[DONE]":
            return event
        if b'"usage"' not in payload or b'"usage":null' in payload or b'"usage": null' in payload:
            if self.usage is None:  # kept only for an estimate, which usage makes moot
                self._unparsed.append(payload)
            return event
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict):
            return event
        if chunk.get("choices") and self.usage is None:
            self._unparsed.append(payload)  # it carries output too
        usage = usage_from(chunk)
        if usage is not None:
            self.usage = usage
            if not self.client_wants_usage and not chunk.get("choices"):
                return None  # the usage-only chunk the client did not ask for
        return event

    async def pump(self) -> None:
        outcome = events_pb2.USAGE_OUTCOME_OK
        splitter = sse.Splitter()
        try:
            async for piece in self.resp.content.iter_any():
                self._forward(splitter.feed(piece))
            rest = splitter.rest()
            if rest:
                self._forward([rest])
        except (TimeoutError, ConnectionError) as e:  # http_client.UpstreamError is a ConnectionError
            outcome = events_pb2.USAGE_OUTCOME_UPSTREAM_ERROR
            log.warning("upstream stream broke", extra={"error": repr(e)})
        finally:
            self.resp.release()
            if self.client_gone and outcome == events_pb2.USAGE_OUTCOME_OK:
                outcome = events_pb2.USAGE_OUTCOME_CLIENT_DISCONNECTED
            try:  # recorded (journaled) before the end of the body can go out
                self.on_done(self.usage or estimate(self.prompt_bound, self.output_chars()), outcome)
            finally:
                self.queue.put_nowait(None)
                self._unparsed.clear()

    def _forward(self, events: list[bytes]) -> None:
        out = [sse.end(e) for e in map(self._inspect, events) if e is not None]
        if out and not self.client_gone:
            self.queue.put_nowait(b"".join(out))

    async def send_to(self, send: Send, receive: Receive) -> None:
        """Sends the events to the client as ASGI body messages as they come, then the end
        of the body. A client that disconnects (``http.disconnect``, or a failing ``send``)
        is marked gone: the reader goes on without it."""
        watcher = asyncio.ensure_future(self._watch(receive))
        finished = False
        try:
            while (item := await self.queue.get()) is not None:
                await send({"type": "http.response.body", "body": item, "more_body": True})
            if not self.client_gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                finished = True
        finally:
            watcher.cancel()
            if not finished:
                self.client_gone = True

    async def _watch(self, receive: Receive) -> None:
        """Waits for the client to leave; then wakes ``send_to`` (a ``None`` in the queue)."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self.client_gone = True
        self.queue.put_nowait(None)

    async def body(self) -> AsyncIterator[bytes]:
        finished = False
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    finished = True
                    return
                yield item
        finally:
            if not finished:
                self.client_gone = True
