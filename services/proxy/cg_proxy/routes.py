"""The OpenAI-compatible endpoints.

The metered endpoints (chat completions, legacy completions, embeddings) share one
path, ``metered``: authenticate, read the body (bounded in size and time), validate it
(``cg_proxy.request_checks``: OpenAI's request schema, one step), check the model is one
the key allows, reserve an upper bound, forward, and record the usage once the client
has its answer (or void the hold when the provider fails before any output). What
differs per endpoint is an ``Endpoint``: its output bound, and how to read usage and
output from the provider's reply. Whether the answer is a stream is decided once, from
the validated body (``_Reply.of``), and the upstreams are told.

``metered`` knows no web framework: it is given the request's id, headers and a body
reader (``Incoming``) and returns what to send (``JsonAnswer`` or ``StreamAnswer``);
``cg_proxy.fastpath`` speaks ASGI around it, with no per-request middleware stack. The
rest (``/v1/models``, health, metrics) are FastAPI routes, behind ``cg_proxy.middleware``.

The collaborators (``ProxyState``: authenticator, ledger, upstreams, recorder) are
interfaces (``cg_proxy.collaborators``); ``tests/unit/proxy`` runs these routes in-process
with fakes of them, through every refusal and failure of ``metered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from cg_proxy import errors, limits, request_checks, tokens
from cg_proxy.auth import AuthedKey
from cg_proxy.collaborators import Finished
from cg_proxy.providers.base import UpstreamResponse
from cg_proxy.relay import StreamRelay
from cg_proxy.state import ProxyState
from cg_proxy.token_usage import Usage, estimate, max_output_tokens, usage_from
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _compile_checks(app: FastAPI) -> AsyncIterator[None]:
    request_checks.warm()  # the request schemas compile at start, not on a first request
    yield


router = APIRouter(lifespan=_compile_checks)


def _state(request: Request) -> ProxyState:
    state: ProxyState = request.app.state.proxy
    return state


def _refuse_declared_size(headers: Mapping[str, str], limit: int) -> None:
    """413 at once for a body whose Content-Length is over the limit (nothing is read)."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise errors.request_too_large(limit)


# The body, read by the transport: refused with 413 as soon as more than ``limit`` bytes
# arrived, with 408 when not all of it arrived within ``timeout_s`` (``fastpath.read_body``).
BodyReader = Callable[[int, float], Awaitable[bytes]]


@dataclass(frozen=True)
class Incoming:
    """A metered request as its route sees it."""

    request_id: str
    headers: Mapping[str, str]  # names in lower case
    read_body: BodyReader


@dataclass(frozen=True)
class JsonAnswer:
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamAnswer:
    relay: StreamRelay
    headers: dict[str, str] = field(default_factory=dict)


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
class Endpoint:
    name: str  # for cg_proxy.tokens and cg_proxy.request_checks: chat, completions, embeddings
    upstream_path: str
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


def _count(body: dict[str, Any], field: str) -> int:
    """``n`` or ``best_of``, validated already: an integer >= 1 (``2.0`` is JSON's 2), or absent."""
    return int(body.get(field) or 1)


def _chat_max_output(body: dict[str, Any], route: keys_pb2.ModelRoute) -> int:
    return max_output_tokens(body, route) * _count(body, "n")  # n choices, each up to the cap


def _chat_output_chars(payload: Any, data: bytes) -> int:
    messages = [c.get("message") for c in _choices(payload)]
    content = "".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
    return len(content) if content else len(data)


def _completion_max_output(body: dict[str, Any], route: keys_pb2.ModelRoute) -> int:
    # Each prompt of a list gets its own completions, `max(n, best_of)` of them generated.
    prompt = body["prompt"]  # validated: a string or a non-empty array of strings
    prompts = 1 if isinstance(prompt, str) else len(prompt)
    return max_output_tokens(body, route) * prompts * max(_count(body, "n"), _count(body, "best_of"))


def _completion_output_chars(payload: Any, data: bytes) -> int:
    text = "".join(str(c.get("text") or "") for c in _choices(payload))
    return len(text) if text else len(data)


def _embedding_usage(payload: Any) -> Usage | None:
    # An embeddings reply reports prompt (and total) tokens only: no output.
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if isinstance(usage, dict) and "completion_tokens" not in usage:
        return usage_from({"usage": {**usage, "completion_tokens": 0}})
    return usage_from(payload)


CHAT = Endpoint("chat", "/chat/completions", _chat_max_output, usage_from, _chat_output_chars)
COMPLETIONS = Endpoint("completions", "/completions", _completion_max_output, usage_from, _completion_output_chars)
EMBEDDINGS = Endpoint(
    "embeddings",
    "/embeddings",
    lambda body, route: 0,
    _embedding_usage,
    lambda payload, data: 0,
    streams=False,
)
ENDPOINTS = {"/v1/chat/completions": CHAT, "/v1/completions": COMPLETIONS, "/v1/embeddings": EMBEDDINGS}
# Bodies larger than this are tokenized in a thread (tiktoken releases the GIL): a 4 MiB
# prompt takes ~0.5 s, which must not stall every other request of the event loop.
_TOKENIZE_INLINE_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Reply:
    """How the client gets its answer, decided once from the validated body."""

    stream: bool  # SSE; else one JSON reply
    client_wants_usage: bool = False  # the usage chunk passed on (the proxy always asks for it)

    @staticmethod
    def of(ep: Endpoint, body: dict[str, Any]) -> _Reply:
        # validated: `stream` a boolean or null, `stream_options` an object or null
        if not ep.streams or body.get("stream") is not True:
            return _Reply(stream=False)
        return _Reply(stream=True, client_wants_usage=bool((body.get("stream_options") or {}).get("include_usage")))


def _upstream_body(body: dict[str, Any], route: keys_pb2.ModelRoute, reply: _Reply) -> dict[str, Any]:
    """What the provider is asked: the route's upstream model, and the usage chunk of a stream."""
    upstream_body = {**body, "model": route.upstream_model}
    if reply.stream:
        upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return upstream_body


_UPSTREAM_FAILED = "The gateway could not forward this request to the provider."
_REPLY_CUT_OFF = "The upstream provider's reply was cut off."


async def metered(st: ProxyState, ep: Endpoint, incoming: Incoming) -> JsonAnswer | StreamAnswer:
    """Parse and validate → reserve → forward → finish, the same for every endpoint."""
    started = time.perf_counter()
    request_id = incoming.request_id
    limit = st.settings.max_body_bytes
    _refuse_declared_size(incoming.headers, limit)
    authed = await st.auth.authenticate(incoming.headers)
    raw = await incoming.read_body(limit, st.settings.body_read_timeout_s)
    body = request_checks.parsed(ep.name, raw)
    model: str = body["model"]
    reply = _Reply.of(ep, body)
    route = authed.models.get(model)
    if route is None:
        raise errors.model_not_found(model)
    request_checks.fits(body, route)

    if len(raw) <= _TOKENIZE_INLINE_MAX_BYTES:
        prompt_bound = tokens.prompt_tokens_bound(ep.name, body, raw, route)
    else:
        prompt_bound = await asyncio.to_thread(tokens.prompt_tokens_bound, ep.name, body, raw, route)
    max_out = ep.max_output(body, route)
    reserved = await st.ledger.reserve(
        request_id, authed.billing, route, prompt_bound, max_out, limits.rate_limit_of(authed.key)
    )
    rate_headers: dict[str, str] = {}
    if reserved.HasField("rate_limit"):
        if reserved.rate_limit.limited:
            raise limits.refused(reserved.rate_limit, model)
        rate_headers = limits.headers(reserved.rate_limit)

    # from here on the hold exists: every way out settles or voids it
    try:
        resp = await st.upstreams.open(ep.upstream_path, route, _upstream_body(body, route, reply), stream=reply.stream)
    except errors.APIError:
        st.recorder.void(request_id, "upstream_error")
        raise
    except Exception:  # a fault of ours or of a provider adapter: the hold must not linger
        log.exception("forwarding failed", extra={"request_id": request_id, "model": model})
        st.recorder.void(request_id, "upstream_error")
        raise errors.APIError(502, _UPSTREAM_FAILED, type="server_error", code="upstream_error") from None
    except BaseException:  # cancelled: nobody waits for the answer
        st.recorder.void(request_id, "cancelled")
        raise

    def finish(usage: Usage, outcome: events_pb2.UsageOutcome.ValueType) -> None:
        st.recorder.record(
            Finished(request_id, authed.key, authed.customer_id, model, usage, outcome, started, reply.stream)
        )

    if reply.stream:
        relay = StreamRelay(resp, reply.client_wants_usage, prompt_bound, finish)
        st.recorder.track(relay.pump())
        return StreamAnswer(relay, rate_headers)
    data = await _read_reply(resp, lambda: st.recorder.void(request_id, "upstream_read_failed"))
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        payload = None
    usage = ep.usage(payload)
    if usage is None:
        usage = estimate(prompt_bound, ep.output_chars(payload, data))
    finish(usage, events_pb2.USAGE_OUTCOME_OK)  # recorded (journaled) before any byte is sent
    return JsonAnswer(data, rate_headers)


async def _read_reply(resp: UpstreamResponse, void: Callable[[], None]) -> bytes:
    """A JSON reply's bytes; when they cannot be read, ``void`` and a 502."""
    try:
        data = await resp.read()
    except Exception:
        void()
        raise errors.APIError(502, _REPLY_CUT_OFF, type="server_error", code="upstream_error") from None
    finally:
        resp.release()
    return data
