"""The OpenAI-compatible endpoints.

The metered endpoints (chat completions, legacy completions, embeddings) share one
path, ``_metered``: read and parse the body, authenticate, validate, check the model is
one the key allows, reserve an upper bound, forward, and record the usage once the
client has its answer (or void the hold when the provider fails before any output).
What differs per endpoint is an ``_Endpoint``: its own field checks, its output bound,
and how to read usage and output from the provider's reply.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cg_proxy import errors, limits, tokens
from cg_proxy.auth import AuthedKey
from cg_proxy.metering import Usage, estimate, max_output_tokens, usage_from
from cg_proxy.relay import StreamRelay
from cg_proxy.state import ProxyState
from cg_proxy.usage import Finished
from creditgate.keys.v1 import keys_pb2

router = APIRouter()


def _state(request: Request) -> ProxyState:
    return request.app.state.proxy


def _refuse_declared_size(request: Request, limit: int) -> None:
    """413 at once for a body whose Content-Length is over the limit (nothing is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise errors.request_too_large(limit)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as more than ``limit`` bytes arrived (a
    chunked body has no Content-Length to check beforehand)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.request_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.bad_request(
            "We could not parse the JSON body of your request. The body must be a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    return body


def _model_entry(model_id: str, authed: AuthedKey) -> dict[str, Any]:
    route = authed.models[model_id]
    return {"id": model_id, "object": "model", "created": 0, "owned_by": route.provider}


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    authed = await _state(request).auth.authenticate(request.headers)
    return JSONResponse({"object": "list", "data": [_model_entry(m, authed) for m in authed.models]})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> JSONResponse:
    authed = await _state(request).auth.authenticate(request.headers)
    if model_id not in authed.models:
        raise errors.model_not_found(model_id)
    return JSONResponse(_model_entry(model_id, authed))


# -- the metered endpoints ------------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    name: str  # for cg_proxy.tokens: chat, completions, embeddings
    upstream_path: str
    # The endpoint's own fields, checked after `model` (400 with `param`).
    check: Callable[[dict[str, Any]], None]
    # The most output tokens the request can produce (the reservation's output bound).
    max_output: Callable[[dict[str, Any], keys_pb2.ModelRoute], int]
    # The provider-reported usage of a JSON reply, if well formed.
    usage: Callable[[Any], Usage | None]
    # Characters of output in a JSON reply, for a marked estimate when usage is missing.
    output_chars: Callable[[Any, bytes], int]
    streams: bool = True


def _choices(payload: Any) -> list[dict[str, Any]]:
    choices = payload.get("choices") if isinstance(payload, dict) else None
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


# OpenAI's own ceiling for `n` (and `best_of`): more could size a hold beyond any budget.
_N_MAX = 128


def _check_chat(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.bad_request("`messages` must be a non-empty array.", param="messages")
    _positive_int(body, "n", maximum=_N_MAX)


def _chat_max_output(body: dict[str, Any], route: keys_pb2.ModelRoute) -> int:
    return max_output_tokens(body, route) * _positive_int(body, "n", maximum=_N_MAX)  # n choices, each up to the cap


def _chat_output_chars(payload: Any, data: bytes) -> int:
    messages = [c.get("message") for c in _choices(payload)]
    content = "".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
    return len(content) if content else len(data)


def _texts(value: Any, allow_empty: bool) -> list[str] | None:
    """A string or a non-empty array of strings, as a list; None if it is neither."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        return None
    if not allow_empty and not all(items):
        return None
    return items


def _positive_int(body: dict[str, Any], field: str, default: int = 1, maximum: int | None = None) -> int:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise errors.bad_request(f"`{field}` must be a positive integer.", param=field)
    if maximum is not None and value > maximum:
        raise errors.bad_request(f"`{field}` must be at most {maximum}.", param=field)
    return value


def _check_completion(body: dict[str, Any]) -> None:
    if _texts(body.get("prompt"), allow_empty=True) is None:
        raise errors.bad_request("`prompt` must be a string or a non-empty array of strings.", param="prompt")
    _positive_int(body, "n", maximum=_N_MAX)
    _positive_int(body, "best_of", maximum=_N_MAX)


def _completion_max_output(body: dict[str, Any], route: keys_pb2.ModelRoute) -> int:
    # Each prompt of a list gets its own completions, `max(n, best_of)` of them generated.
    prompts = len(_texts(body.get("prompt"), allow_empty=True) or [""])
    per_prompt = max(_positive_int(body, "n", maximum=_N_MAX), _positive_int(body, "best_of", maximum=_N_MAX))
    return max_output_tokens(body, route) * prompts * per_prompt


def _completion_output_chars(payload: Any, data: bytes) -> int:
    text = "".join(str(c.get("text") or "") for c in _choices(payload))
    return len(text) if text else len(data)


_EMBEDDING_INPUTS_MAX = 2048


def _check_embedding(body: dict[str, Any]) -> None:
    inputs = _texts(body.get("input"), allow_empty=False)
    if inputs is None:
        raise errors.bad_request(
            "`input` must be a non-empty string or a non-empty array of non-empty strings.", param="input"
        )
    if len(inputs) > _EMBEDDING_INPUTS_MAX:
        raise errors.bad_request(f"`input` may hold at most {_EMBEDDING_INPUTS_MAX} items.", param="input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise errors.bad_request("`encoding_format` must be 'float' or 'base64'.", param="encoding_format")
    _positive_int(body, "dimensions")


def _embedding_usage(payload: Any) -> Usage | None:
    # An embeddings reply reports prompt (and total) tokens only: no output.
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if isinstance(usage, dict) and "completion_tokens" not in usage:
        return usage_from({"usage": {**usage, "completion_tokens": 0}})
    return usage_from(payload)


CHAT = _Endpoint("chat", "/chat/completions", _check_chat, _chat_max_output, usage_from, _chat_output_chars)
COMPLETIONS = _Endpoint(
    "completions", "/completions", _check_completion, _completion_max_output, usage_from, _completion_output_chars
)
EMBEDDINGS = _Endpoint(
    "embeddings", "/embeddings", _check_embedding, lambda body, route: 0, _embedding_usage,
    lambda payload, data: 0, streams=False,
)
# Bodies larger than this are tokenized in a thread (tiktoken releases the GIL): a 4 MiB
# prompt takes ~0.5 s, which must not stall every other request of the event loop.
_TOKENIZE_INLINE_MAX_BYTES = 64 * 1024


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _metered(request, CHAT)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await _metered(request, COMPLETIONS)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    return await _metered(request, EMBEDDINGS)


def _stream_params(body: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise errors.bad_request("`stream` must be a boolean.", param="stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise errors.bad_request("`stream_options` must be an object.", param="stream_options")
    return stream, stream_options


async def _metered(request: Request, ep: _Endpoint) -> Response:
    """Parse and validate → reserve → forward → finish, the same for every endpoint."""
    started = time.perf_counter()
    st = _state(request)
    request_id: str = request.state.request_id
    limit = st.settings.max_body_bytes
    _refuse_declared_size(request, limit)
    authed = await st.auth.authenticate(request.headers)
    raw = await _read_body(request, limit)
    body = _json_object(raw)

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_request("You must provide a model parameter.", param="model")
    ep.check(body)
    stream, stream_options = _stream_params(body) if ep.streams else (False, None)
    route = authed.models.get(model)
    if route is None:
        raise errors.model_not_found(model)

    if len(raw) <= _TOKENIZE_INLINE_MAX_BYTES:
        prompt_bound = tokens.prompt_tokens_bound(ep.name, body, raw, route)
    else:
        prompt_bound = await asyncio.to_thread(tokens.prompt_tokens_bound, ep.name, body, raw, route)
    max_out = ep.max_output(body, route)
    reserved = await st.meter.reserve(request_id, authed.billing, route, prompt_bound, max_out,
                                      limits.rate_limit_of(authed.key))
    rate_headers: dict[str, str] = {}
    if reserved.HasField("rate_limit"):
        if reserved.rate_limit.limited:
            raise limits.refused(reserved.rate_limit, model)
        rate_headers = limits.headers(reserved.rate_limit)

    upstream_body = dict(body)
    upstream_body["model"] = route.upstream_model
    if stream:
        upstream_body["stream_options"] = {**(stream_options or {}), "include_usage": True}
    try:
        resp = await st.upstreams.open(ep.upstream_path, route, upstream_body)
    except errors.APIError:
        st.recorder.void(request_id, "upstream_error")
        raise

    def finish(usage: Usage, status: str) -> None:
        st.recorder.record(Finished(request_id, authed.key, model, usage, status, started, stream))

    if stream:
        relay = StreamRelay(resp, bool((stream_options or {}).get("include_usage")), prompt_bound, finish)
        st.recorder.track(relay.pump())
        return StreamingResponse(
            relay.body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **rate_headers}
        )

    try:
        data = await resp.read()
    except Exception:
        resp.release()
        st.recorder.void(request_id, "upstream_read_failed")
        raise errors.APIError(502, "The upstream provider's reply was cut off.", type="server_error",
                              code="upstream_error") from None
    resp.release()
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    usage = ep.usage(payload)
    if usage is None:
        usage = estimate(prompt_bound, ep.output_chars(payload, data))
    finish(usage, "ok")
    return Response(data, media_type="application/json", headers=rate_headers)
