"""The mock provider's HTTP app.

Legacy completions answer each prompt with the chat reply (``REPLY_WORDS``, cut by
``max_tokens``); prompt tokens = words + 1 per prompt. Embeddings are ``EMBEDDING_DIMS``
floats (or ``dimensions``) derived from the SHA-256 of each input, each a multiple of
1/128 so the base64 (float32) encoding is exact; prompt tokens = words + 1 per input.

It refuses what OpenAI refuses, with OpenAI's error body (400 ``invalid_request_error``,
``param`` naming the field): the same validator as the proxy's
(``cglib.openai_requests``: OpenAI's request schemas, ``max_tokens`` above the model's
cap for the OpenAI models it plays), so tests see what production would.

A broken provider, for tests of what the gateway does about one: with ``fail`` set
(``CG_MOCK_FAIL``, or ``app.state.fail`` of an app run in-process, which a test may change
between requests) every POST fails. ``"503"`` (any HTTP status) answers that status with
the provider's error body (429 with ``retry-after: 1``); ``"hang"`` never answers, until
the client gives up. Empty (the default): the mock works.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cg_mock_upstream import anthropic
from cg_mock_upstream.replies import REPLY_WORDS, count_prompt_tokens
from cglib import sse
from cglib.openai_requests import RequestInvalid, RequestValidator, check_output_cap

MODELS = [
    "gpt-4o-mini",
    "gpt-4o",
    "claude-haiku-4-5",
    "gemini-2.5-flash",
    "llama-3.3-70b-versatile",
    "mistral-small-latest",
]
# OpenAI's documented output caps of the OpenAI models the mock plays (max_tokens above: 400).
MAX_OUTPUT_TOKENS = {"gpt-4o-mini": 16384, "gpt-4o": 16384}


def reply_words(body: dict[str, Any]) -> list[str]:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
        return REPLY_WORDS[: int(limit)]
    return REPLY_WORDS


def _error(
    status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestInvalid)
    return _error(400, exc.message, param=exc.param, code=exc.code)


async def _valid_body(request: Request, endpoint: str) -> dict[str, Any]:
    """The body if OpenAI would take it; else ``RequestInvalid`` (answered by ``_refused``)."""
    body = request.app.state.validator.parse(endpoint, await request.body())
    cap = MAX_OUTPUT_TOKENS.get(body["model"])
    if cap and endpoint != "embeddings":
        check_output_cap(body, cap)
    dimensions = body.get("dimensions") if endpoint == "embeddings" else None
    if dimensions is not None and dimensions > EMBEDDING_DIMS_MAX:
        raise RequestInvalid(
            f"Invalid value for 'dimensions': {dimensions}. This model supports at most "
            f"{EMBEDDING_DIMS_MAX} dimensions.",
            "dimensions",
            "invalid_value",
        )
    return body


async def chat_completions(request: Request) -> Response:
    chunk_delay_s = request.app.state.chunk_delay_ms / 1000
    body = await _valid_body(request, "chat")
    model = body["model"]
    words = reply_words(body)
    prompt_tokens = count_prompt_tokens(body["messages"])
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(words),
        "total_tokens": prompt_tokens + len(words),
    }
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

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
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
        return sse.frame(json.dumps(data))

    async def events() -> AsyncIterator[bytes]:
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
            yield sse.frame(json.dumps(data))
        yield sse.DONE

    return StreamingResponse(events(), media_type="text/event-stream")


def _texts(value: Any) -> list[str]:
    """A prompt or an input as texts, one per item: a string, an array of strings, an
    array of token ids or an array of token-id arrays (ids read as words, so a token
    array of n ids counts n tokens). Null or ``[]``: one empty prompt."""
    if isinstance(value, str):
        return [value]
    if not value:
        return [""]
    if all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]
    return [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]


def count_text_tokens(texts: list[str]) -> int:
    return sum(len(t.split()) + 1 for t in texts)


async def completions(request: Request) -> Response:
    chunk_delay_s = request.app.state.chunk_delay_ms / 1000
    body = await _valid_body(request, "completions")
    prompts = _texts(body.get("prompt"))
    model = body["model"]
    words = reply_words(body)
    text = " ".join(words)
    prompt_tokens = count_text_tokens(prompts)
    completion_tokens = len(words) * len(prompts)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    cid = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    finish = "length" if len(words) < len(REPLY_WORDS) else "stop"

    def response(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": choices,
            **extra,
        }

    def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}

    if not body.get("stream"):
        return JSONResponse(response([choice(i, text, finish) for i in range(len(prompts))], usage=usage))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def events() -> AsyncIterator[bytes]:
        # Streamed chunks have the non-streamed shape; `finish_reason` is null until a
        # choice's last chunk, and only the final, choice-less chunk carries `usage`.
        for i in range(len(prompts)):
            for j, w in enumerate(words):
                if chunk_delay_s:
                    await asyncio.sleep(chunk_delay_s)
                yield sse.frame(json.dumps(response([choice(i, w if j == 0 else " " + w, None)])))
            yield sse.frame(json.dumps(response([choice(i, "", finish)])))
        if include_usage:
            yield sse.frame(json.dumps(response([], usage=usage)))
        yield sse.DONE

    return StreamingResponse(events(), media_type="text/event-stream")


EMBEDDING_DIMS = 8
EMBEDDING_DIMS_MAX = 3072  # text-embedding-3-large's, the most OpenAI's models give


def embedding_vector(text: str, dims: int = EMBEDDING_DIMS) -> list[float]:
    digest = b""
    counter = 0
    while len(digest) < dims:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    return [b / 128 - 1 for b in digest[:dims]]


async def embeddings(request: Request) -> Response:
    body = await _valid_body(request, "embeddings")
    inputs = _texts(body["input"])
    encoding = body.get("encoding_format") or "float"
    dims = int(body.get("dimensions") or EMBEDDING_DIMS)
    data = []
    for i, text in enumerate(inputs):
        vector: list[float] | str = embedding_vector(text, dims)
        if encoding == "base64":  # little-endian float32, as OpenAI's API sends it
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = count_text_tokens(inputs)
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def list_models(request: Request) -> Response:
    return JSONResponse(
        {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in MODELS]}
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _check_fail(fail: str) -> str:
    if fail and fail != "hang" and not (fail.isdigit() and 400 <= int(fail) <= 599):
        raise ValueError(f"fail must be empty, an HTTP error status or 'hang', not {fail!r}")
    return fail


class FailureSwitch:
    """Fails every POST while ``app.state.fail`` is set (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fail = _check_fail(scope["app"].state.fail) if scope["type"] == "http" and scope["method"] == "POST" else ""
        if not fail:
            await self.app(scope, receive, send)
        elif fail == "hang":
            while (await receive())["type"] != "http.disconnect":
                pass
        else:
            status = int(fail)
            headers = {"retry-after": "1"} if status == 429 else None
            if scope["path"].startswith("/anthropic/"):
                response: Response = anthropic.error(status, f"mock failure {status}", headers)
            else:
                type_ = (
                    "rate_limit_error"
                    if status == 429
                    else "server_error"
                    if status >= 500
                    else "invalid_request_error"
                )
                response = JSONResponse(
                    {"error": {"message": f"mock failure {status}", "type": type_, "param": None, "code": None}},
                    status,
                    headers=headers,
                )
            await response(scope, receive, send)


def create_app(chunk_delay_ms: int = 0, fail: str = "") -> Starlette:
    """``chunk_delay_ms`` slows streams down (a pause before each content chunk), for
    tests of what happens while a stream is in flight; ``fail`` makes it a broken provider."""
    app = Starlette(
        middleware=[Middleware(FailureSwitch)],
        exception_handlers={RequestInvalid: _refused},
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
    )
    app.state.chunk_delay_ms = chunk_delay_ms
    app.state.fail = _check_fail(fail)
    app.state.validator = RequestValidator()
    anthropic.mount(app)  # POST /anthropic/v1/messages
    return app
