"""The mock provider's Anthropic side: ``POST /anthropic/v1/messages`` answering like
Anthropic's Messages API, JSON and SSE (``message_start`` ... ``message_stop``).

Deterministic like the OpenAI mock, with the same reply and token rule: input tokens =
words in the messages (``system`` counts as one message) + 3 per message + 3; the reply
is ``REPLY_WORDS`` cut to ``max_tokens`` (stop_reason ``max_tokens`` when cut, else
``end_turn``). With ``tool_choice`` ``any`` or ``tool`` the reply is one ``tool_use``
block (stop_reason ``tool_use``) whose input is ``{"text": <the reply>}``.

Like the real API it requires ``anthropic-version``, ``x-api-key``, ``max_tokens`` and
only ``user``/``assistant`` roles in ``messages``.

Failures for tests: ``mock-fail-<status>`` in the ``x-mock-fail`` header, the model name
or the last user message answers that HTTP status with Anthropic's error body (429 with
``retry-after: 1``, 529 ``overloaded_error``); ``mock-fail-<status>-once`` fails only the
first time a request with these messages is seen, so a retry succeeds;
``mock-fail-midstream`` sends an ``error`` event after the first word of a stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cg_mock_upstream.replies import REPLY_WORDS, count_prompt_tokens
from cglib import sse

FAIL = re.compile(r"mock-fail-(\d{3}|midstream)(-once)?")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": f"req_mock{uuid.uuid4().hex[:16]}",
    }
    return JSONResponse(body, status, headers=headers)


def _text(content: Any) -> str:
    """The words a message's content holds: strings, text blocks and tool results."""
    if isinstance(content, str):
        return content
    words = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "text":
            words.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") == "tool_result":
            words.append(_text(block.get("content")))
    return " ".join(words)


def input_tokens(body: dict[str, Any]) -> int:
    messages = [{"content": _text(m.get("content"))} for m in body["messages"]]
    if body.get("system"):
        messages.insert(0, {"content": _text(body["system"])})
    return count_prompt_tokens(messages)


def _failure(request: Request, body: dict[str, Any]) -> str | None:
    """The failure asked for (``"429"``, ``"midstream"``...), if it applies to this attempt."""
    last_user: dict[str, Any] = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), {})
    for source in (request.headers.get("x-mock-fail", ""), str(body.get("model", "")), _text(last_user.get("content"))):
        match = FAIL.search(source)
        if match:
            break
    else:
        return None
    if match.group(2):  # -once: fail the first time these messages are seen
        key = hashlib.sha256((match.group(0) + json.dumps(body["messages"], sort_keys=True)).encode()).hexdigest()
        seen: set[str] = request.app.state.anthropic_failed_once
        if key in seen:
            return None
        seen.add(key)
    return match.group(1)


def _tool_name(body: dict[str, Any]) -> str | None:
    choice, tools = body.get("tool_choice") or {}, body.get("tools") or []
    if not tools or choice.get("type") not in ("any", "tool"):
        return None
    return choice.get("name") or tools[0].get("name")


async def messages(request: Request) -> Response:
    if not request.headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    if not request.headers.get("x-api-key"):
        return error(401, "x-api-key header is required")
    try:
        body = json.loads(await request.body())
    except ValueError:
        return error(400, "body is not JSON")
    if (
        not isinstance(body, dict)
        or not body.get("model")
        or not isinstance(body.get("messages"), list)
        or not body["messages"]
    ):
        return error(400, "model and messages are required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return error(400, "max_tokens: Field required")
    for i, m in enumerate(body["messages"]):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            return error(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")

    failure = _failure(request, body)
    if failure is not None and failure != "midstream":
        status = int(failure)
        return error(status, f"mock failure {status}", headers={"retry-after": "1"} if status == 429 else None)

    words = REPLY_WORDS[:max_tokens]
    text = " ".join(words)
    tool = _tool_name(body)
    stop_reason = "tool_use" if tool else ("max_tokens" if len(words) < len(REPLY_WORDS) else "end_turn")
    usage_in = input_tokens(body)
    message_id = f"msg_mock{uuid.uuid4().hex[:20]}"
    tool_id = f"toolu_mock{uuid.uuid4().hex[:16]}"
    if not body.get("stream"):
        block = (
            {"type": "tool_use", "id": tool_id, "name": tool, "input": {"text": text}}
            if tool
            else {"type": "text", "text": text}
        )
        return JSONResponse(
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [block],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": usage_in,
                    "output_tokens": len(words),
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            }
        )

    chunk_delay_s = getattr(request.app.state, "chunk_delay_ms", 0) / 1000

    def event(name: str, data: dict[str, Any]) -> bytes:
        return sse.frame(json.dumps(data), event=name)

    async def events() -> AsyncIterator[bytes]:
        yield event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": usage_in,
                        "output_tokens": 1,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                },
            },
        )
        if tool:
            yield event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "tool_use", "id": tool_id, "name": tool, "input": {}},
                },
            )
            arguments = json.dumps({"text": text})
            pieces = [arguments[i : i + 20] for i in range(0, len(arguments), 20)]
        else:
            yield event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        yield event("ping", {"type": "ping"})
        for piece in pieces:
            if chunk_delay_s:
                await asyncio.sleep(chunk_delay_s)
            delta = (
                {"type": "input_json_delta", "partial_json": piece} if tool else {"type": "text_delta", "text": piece}
            )
            yield event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            if failure == "midstream":
                yield event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                return
        yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": len(words)},
            },
        )
        yield event("message_stop", {"type": "message_stop"})

    return StreamingResponse(events(), media_type="text/event-stream")


def mount(app: Starlette) -> None:
    """Adds ``POST /anthropic/v1/messages`` to the mock's app."""
    app.router.routes.append(Route("/anthropic/v1/messages", messages, methods=["POST"]))
    app.state.anthropic_failed_once = set()
