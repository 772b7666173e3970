"""Anthropic's Messages API (``POST <base_url>/messages``) behind OpenAI's chat completions.

Request (OpenAI → Anthropic):

- ``system``/``developer`` messages → top-level ``system`` (joined by blank lines);
  ``user`` and ``assistant`` turns keep their order, consecutive turns of one role are
  merged; an assistant's ``tool_calls`` → ``tool_use`` blocks; ``tool`` messages →
  ``tool_result`` blocks in a user turn; ``image_url`` parts → ``image`` blocks
  (``data:`` URLs as base64, others by URL).
- ``max_tokens`` (required by Anthropic) = the request's ``max_completion_tokens`` /
  ``max_tokens``, capped at the route's ``max_output_tokens``, else that cap: the same
  bound the reservation used.
- ``stop`` → ``stop_sequences``; ``temperature`` (capped at 1, Anthropic's maximum),
  ``top_p`` as is; ``user`` → ``metadata.user_id``; ``tools`` → ``{name, description,
  input_schema}``; ``tool_choice`` none/auto/required/function → none/auto/any/tool;
  ``parallel_tool_calls: false`` → ``disable_parallel_tool_use``. ``n`` > 1 is refused;
  other OpenAI-only fields (``seed``, penalties, ``logprobs``, ``response_format``...)
  are dropped, as Anthropic's own OpenAI compatibility layer does.

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

import aiohttp

from cg_proxy import errors
from cg_proxy.metering import max_output_tokens
from cg_proxy.providers.base import Adapter, ProviderRequest, TranslatedStream, UpstreamResponse, join_url
from cg_proxy.settings import Upstream
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


# -- request ----------------------------------------------------------------------------


def _bad(message: str, param: str) -> errors.APIError:
    return errors.bad_request(message, param=param)


def _plain_text(content: Any, param: str) -> str:
    """A string, or an array of text parts, as one string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad("Only text content parts are supported here.", f"{param}.content[{i}]")
            texts.append(part["text"])
        return "\n".join(texts)
    raise _bad("`content` must be a string or an array of content parts.", f"{param}.content")


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise _bad("`image_url.url` must be a URL or a data URL.", f"{param}.image_url")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise _bad("Image data URLs must look like `data:image/png;base64,...`.", f"{param}.image_url")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad("`content` must be a string or an array of content parts.", f"{param}.content")
    blocks = []
    for i, part in enumerate(content):
        where = f"{param}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part, where))
        else:
            raise _bad(f"Content parts of type `{kind}` are not supported for this model.", where)
    return blocks


def _assistant_blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    content = message.get("content")
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):  # text (and refusal) parts
        for i, part in enumerate(content):
            text = part.get("text", part.get("refusal")) if isinstance(part, dict) else None
            if not isinstance(text, str):
                raise _bad("Assistant content parts must be text.", f"{param}.content[{i}]")
            if text:
                blocks.append({"type": "text", "text": text})
    elif isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif content is not None:
        raise _bad("`content` must be a string or an array of content parts.", f"{param}.content")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _bad("`tool_calls` must be an array.", f"{param}.tool_calls")
    for i, call in enumerate(calls):
        where = f"{param}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(call.get("id"), str)
        ):
            raise _bad("A tool call needs an `id` and a `function` with a `name`.", where)
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise _bad("`function.arguments` must be a JSON object.", f"{where}.function.arguments") from None
        if not isinstance(arguments, dict):
            raise _bad("`function.arguments` must be a JSON object.", f"{where}.function.arguments")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments})
    return blocks


def _tool_result(message: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad("A `tool` message needs the `tool_call_id` it answers.", f"{param}.tool_call_id")
    return {"type": "tool_result", "tool_use_id": call_id, "content": _plain_text(message.get("content"), param)}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("`tools` must be an array.", "tools")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad("Only `function` tools with a `name` are supported for this model.", f"tools[{i}]")
        spec: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            spec["description"] = function["description"]
        spec["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        out.append(spec)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        result = {"type": "auto"} if parallel is False else None
    elif choice in ("none", "auto"):
        result = {"type": choice}
    elif choice == "required":
        result = {"type": "any"}
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _bad("`tool_choice` must be none, auto, required or a named function.", "tool_choice")
    if result is not None and parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"`{name}` must be a number.", name)
    return value


def to_messages_request(body: dict[str, Any], route: keys_pb2.ModelRoute) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat-completions ``body``."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(body.get("messages") or []):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad("Each message must be an object.", param)
        role = message.get("role")
        if role in ("system", "developer"):
            text = _plain_text(message.get("content"), param)
            if text:
                system.append(text)
            continue
        if role == "user":
            turn_role, blocks = "user", _user_blocks(message.get("content"), param)
        elif role == "assistant":
            turn_role, blocks = "assistant", _assistant_blocks(message, param)
        elif role == "tool":
            turn_role, blocks = "user", [_tool_result(message, param)]
        else:
            raise _bad(f"Messages with role `{role}` are not supported for this model.", f"{param}.role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    for turn in turns:  # a lone text block is sent as a plain string
        if len(turn["content"]) == 1 and turn["content"][0]["type"] == "text":
            turn["content"] = turn["content"][0]["text"]

    n = body.get("n")
    if n is not None and n != 1:
        raise _bad("Only `n: 1` is supported for this model.", "n")
    out: dict[str, Any] = {"model": body["model"], "max_tokens": max_output_tokens(body, route), "messages": turns}
    if system:
        out["system"] = "\n\n".join(system)
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            out["stop_sequences"] = list(stop)
    elif stop is not None:
        raise _bad("`stop` must be a string or an array of strings.", "stop")
    temperature = _number(body, "temperature")
    if temperature is not None:
        out["temperature"] = min(temperature, 1.0)
    top_p = _number(body, "top_p")
    if top_p is not None:
        out["top_p"] = top_p
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if body.get("stream") is True:
        out["stream"] = True
    return out


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
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


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
        self.buffer = b""
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self.streamed_chars = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        events = (self.buffer + data).replace(b"\r\n", b"\n").split(b"\n\n")
        self.buffer = events.pop()  # the event still arriving (a trailing \r waits for its \n)
        return b"".join([self._event(event) for event in events])

    def finish(self) -> bytes:
        """At the end of the provider's stream: a last unterminated event, and the
        closing chunks if the provider reported how the message ended but not ``message_stop``."""
        out = self._event(self.buffer) if self.buffer.strip() else b""
        self.buffer = b""
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
        return self._chunk({}, finish_reason(self.stop_reason) or "stop") + self._usage_chunk() + b"data: [DONE]\n\n"

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
        name, data = "", []
        for line in raw.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
            elif line.startswith(b"event:"):
                name = line[6:].strip().decode("utf-8", "replace")
        if not data:
            return b""  # comments, keep-alives
        try:
            event = json.loads(b"\n".join(data))
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
                index = self.tool_index.get(event.get("index"))
                if index is not None:
                    self.streamed_chars += len(delta["partial_json"])
                    return self._chunk(
                        {"tool_calls": [{"index": index, "function": {"arguments": delta["partial_json"]}}]}
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

    def stream(self, resp: aiohttp.ClientResponse) -> UpstreamResponse:
        return TranslatedStream(resp, StreamTranslator())
