"""Anthropic's Messages API (``POST <base_url>/messages``) behind OpenAI's chat completions.

Request (OpenAI → Anthropic): ``cg_proxy.providers.anthropic_request``.

Reply (Anthropic → OpenAI): text blocks → ``content``, ``tool_use`` → ``tool_calls``;
``stop_reason`` end_turn/stop_sequence/pause_turn → stop, max_tokens/
model_context_window_exceeded → length, tool_use → tool_calls, refusal → content_filter;
usage ``input_tokens`` (+ cache read/creation tokens) → ``prompt_tokens``,
``output_tokens`` → ``completion_tokens``. Streams are translated event by event
(``StreamTranslator``) and end with a usage chunk (``choices: []``) and ``[DONE]``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from cg_proxy import errors
from cg_proxy.http_client import Response
from cg_proxy.providers.anthropic_request import to_messages_request
from cg_proxy.providers.base import Adapter, ProviderRequest, TranslatedStream, UpstreamResponse, join_url
from cg_proxy.settings import Upstream
from cglib import sse
from creditgate.keys.v1 import keys_pb2

log = logging.getLogger(__name__)

ANTHROPIC_VERSION = "2023-06-01"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


# -- replies ----------------------------------------------------------------------------


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def to_usage(usage: Any) -> dict[str, Any] | None:
    """Anthropic usage as OpenAI's. Anthropic's ``input_tokens`` excludes prompt-cache
    reads and writes; OpenAI's ``prompt_tokens`` includes cached tokens, so both are added."""
    if (
        not isinstance(usage, dict)
        or not isinstance(usage.get("input_tokens"), int)
        or not isinstance(usage.get("output_tokens"), int)
    ):
        return None
    cache_read = _int(usage.get("cache_read_input_tokens"))
    prompt = _int(usage["input_tokens"]) + cache_read + _int(usage.get("cache_creation_input_tokens"))
    completion = _int(usage["output_tokens"])
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cache_read:
        out["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return out


def to_chat_completion(message: dict[str, Any], created: int | None = None) -> dict[str, Any]:
    """A Messages API reply as a ``chat.completion``. Thinking and server-tool blocks
    have no OpenAI counterpart and are left out."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})},
                }
            )
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": message.get("model"),
        "choices": [
            {"index": 0, "message": reply, "logprobs": None, "finish_reason": finish_reason(message.get("stop_reason"))}
        ],
    }
    usage = to_usage(message.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def _sse(data: dict[str, Any]) -> bytes:
    return sse.frame(json.dumps(data, separators=(",", ":")))


class StreamTranslator:
    """Anthropic SSE (``message_start``, ``content_block_start/delta/stop``,
    ``message_delta``, ``message_stop``, ``ping``, ``error``) → OpenAI
    ``chat.completion.chunk`` SSE: a role chunk, content and tool-call deltas, a finish
    chunk, a usage chunk with ``choices: []`` and ``data: [DONE]``. Fed bytes split
    anywhere. An ``error`` event ends the stream with a usage chunk (the provider's input
    count, and the larger of its last output count and ~4 characters per token streamed;
    nothing if the message never started) and an OpenAI error chunk, which the openai SDK
    raises."""

    def __init__(self, created: int | None = None) -> None:
        self.created = created if created is not None else int(time.time())
        self.id = ""
        self.model = ""
        self.events = sse.Splitter()
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        # Anthropic's block index (an int, as the provider sent it) -> OpenAI's tool call index
        self.tool_index: dict[object, int] = {}
        self.streamed_chars = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        return b"".join([self._event(event) for event in self.events.feed(data)])

    def finish(self) -> bytes:
        """At the end of the provider's stream: a last unterminated event, and the
        closing chunks if the provider reported how the message ended but not ``message_stop``."""
        rest = self.events.rest()
        out = self._event(rest) if rest else b""
        if not self.done and self.stop_reason is not None:
            out += self._close()
        return out

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
        )

    def _usage_chunk(self) -> bytes:
        usage = to_usage(self.usage)
        if usage is None:
            return b""
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage,
            }
        )

    def _close(self) -> bytes:
        self.done = True
        return self._chunk({}, finish_reason(self.stop_reason) or "stop") + self._usage_chunk() + sse.DONE

    def _fail(self, err: dict[str, Any]) -> bytes:
        self.done = True
        if self.id:  # the message started: bill what was produced until the error
            self.usage["output_tokens"] = max(self.usage.get("output_tokens", 0), (self.streamed_chars + 3) // 4)
        else:
            self.usage = {"input_tokens": 0, "output_tokens": 0}
        etype = err.get("type") if isinstance(err.get("type"), str) else ""
        return self._usage_chunk() + _sse(
            {
                "error": {
                    "message": str(err.get("message") or "The upstream provider failed mid-stream."),
                    "type": "server_error",
                    "param": None,
                    "code": "upstream_overloaded" if etype == "overloaded_error" else "upstream_error",
                }
            }
        )

    def _event(self, raw: bytes) -> bytes:
        if self.done:
            return b""
        data, name = sse.data(raw), sse.name(raw)
        if data is None:
            return b""  # comments, keep-alives
        try:
            event = json.loads(data)
        except ValueError:
            log.warning("unparsable event in the provider's stream", extra={"event": name})
            return b""
        if not isinstance(event, dict):
            return b""
        kind = event.get("type") or name
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = str(message.get("id") or "")
            self.model = str(message.get("model") or "")
            self._note_usage(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "text":
                if not block.get("text"):
                    return b""
                self.streamed_chars += len(block["text"])
                return self._chunk({"content": block["text"]})
            if block.get("type") == "tool_use":
                index = self.tool_index[event.get("index")] = len(self.tool_index)
                return self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": block.get("id"),
                                "type": "function",
                                "function": {"name": block.get("name"), "arguments": ""},
                            }
                        ]
                    }
                )
            return b""
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                self.streamed_chars += len(delta["text"])
                return self._chunk({"content": delta["text"]})
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                call_index = self.tool_index.get(event.get("index"))
                if call_index is not None:
                    self.streamed_chars += len(delta["partial_json"])
                    return self._chunk(
                        {"tool_calls": [{"index": call_index, "function": {"arguments": delta["partial_json"]}}]}
                    )
            return b""  # thinking, signature and citation deltas have no OpenAI counterpart
        if kind == "message_delta":
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            if stop_reason:
                self.stop_reason = stop_reason
            self._note_usage(event.get("usage"))
            return b""
        if kind == "message_stop":
            return self._close()
        if kind == "error":
            err = event.get("error")
            return self._fail(err if isinstance(err, dict) else {})
        return b""  # ping, content_block_stop, and event types added later

    def _note_usage(self, usage: Any) -> None:
        """Counts in ``message_delta`` are cumulative: the latest value wins."""
        if isinstance(usage, dict):
            for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
                if isinstance(usage.get(key), int):
                    self.usage[key] = usage[key]


# -- the adapter ------------------------------------------------------------------------


class AnthropicMessages(Adapter):
    def request(
        self, upstream: Upstream, path: str, route: keys_pb2.ModelRoute, body: dict[str, Any]
    ) -> ProviderRequest:
        if path != "/chat/completions":
            raise errors.APIError(404, f"`{path}` is not available for this model.", code="unsupported_endpoint")
        headers = {
            "Content-Type": "application/json",
            "x-api-key": upstream.api_key.get_secret_value(),
            "anthropic-version": ANTHROPIC_VERSION,
        }
        payload = to_messages_request(body, route)
        return ProviderRequest(join_url(upstream.base_url, "/messages"), headers, json.dumps(payload).encode())

    def reply(self, raw: bytes) -> bytes:
        try:
            message = json.loads(raw)
            if not isinstance(message, dict) or message.get("type") != "message":
                raise ValueError("not a message")
        except ValueError:
            raise errors.APIError(
                502, "The upstream provider's reply could not be read.", type="server_error", code="upstream_error"
            ) from None
        return json.dumps(to_chat_completion(message)).encode()

    def stream(self, resp: Response) -> UpstreamResponse:
        return TranslatedStream(resp, StreamTranslator())
