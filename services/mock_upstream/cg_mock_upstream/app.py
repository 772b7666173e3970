"""The mock provider's HTTP app."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REPLY = "Hello from the Creditgate mock upstream. This reply is deterministic so usage can be priced exactly."
REPLY_WORDS = REPLY.split()
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "gemini-2.5-flash", "llama-3.3-70b-versatile", "mistral-small-latest"]


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 3
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        total += 3 + len(str(content).split())
    return total


def reply_words(body: dict[str, Any]) -> list[str]:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and limit > 0:
        return REPLY_WORDS[:limit]
    return REPLY_WORDS


def _error(status: int, message: str, type_: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": None}}, status)


async def chat_completions(request: Request) -> Response:
    chunk_delay_s = request.app.state.chunk_delay_ms / 1000
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _error(400, "body is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
        return _error(400, "model and messages are required")
    model = body["model"]
    words = reply_words(body)
    prompt_tokens = count_prompt_tokens(body["messages"])
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    finish = "length" if len(words) < len(REPLY_WORDS) else "stop"
    if not body.get("stream"):
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
                "system_fingerprint": "fp_mock",
            }
        )
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> str:
        data = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            data["usage"] = None
        return f"data: {json.dumps(data)}\n\n"

    async def events() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""}, None)
        for i, w in enumerate(words):
            if chunk_delay_s:
                await asyncio.sleep(chunk_delay_s)
            yield chunk({"content": w if i == 0 else " " + w}, None)
        yield chunk({}, finish)
        if include_usage:
            data = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [],
                "usage": usage,
            }
            yield f"data: {json.dumps(data)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def list_models(request: Request) -> Response:
    return JSONResponse(
        {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in MODELS]}
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(chunk_delay_ms: int = 0) -> Starlette:
    """``chunk_delay_ms`` slows streams down (a pause before each content chunk), for
    tests of what happens while a stream is in flight."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    app.state.chunk_delay_ms = chunk_delay_ms
    return app
