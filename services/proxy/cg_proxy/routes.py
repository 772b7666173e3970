"""The OpenAI-compatible endpoints."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cg_proxy import errors
from cg_proxy.auth import AuthedKey
from cg_proxy.metering import estimate, max_output_tokens, usage_from
from cg_proxy.relay import StreamRelay
from cg_proxy.state import ProxyState
from cg_proxy.usage import Finished

router = APIRouter()


def _state(request: Request) -> ProxyState:
    return request.app.state.proxy


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
    authed = await _state(request).auth.authenticate(request.headers.get("authorization"))
    return JSONResponse({"object": "list", "data": [_model_entry(m, authed) for m in authed.models]})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> JSONResponse:
    authed = await _state(request).auth.authenticate(request.headers.get("authorization"))
    if model_id not in authed.models:
        raise errors.model_not_found(model_id)
    return JSONResponse(_model_entry(model_id, authed))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    started = time.perf_counter()
    st = _state(request)
    request_id: str = request.state.request_id
    authed = await st.auth.authenticate(request.headers.get("authorization"))
    raw = await request.body()
    body = _json_object(raw)

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_request("You must provide a model parameter.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.bad_request("`messages` must be a non-empty array.", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise errors.bad_request("`stream` must be a boolean.", param="stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise errors.bad_request("`stream_options` must be an object.", param="stream_options")
    route = authed.models.get(model)
    if route is None:
        raise errors.model_not_found(model)

    prompt_bound = len(raw)  # a prompt has no more tokens than its JSON body has bytes
    max_out = max_output_tokens(body, route)
    await st.meter.reserve(request_id, authed.billing, route, prompt_bound, max_out)

    upstream_body = dict(body)
    upstream_body["model"] = route.upstream_model
    if stream:
        upstream_body["stream_options"] = {**(stream_options or {}), "include_usage": True}
    try:
        resp = await st.upstreams.open("/chat/completions", route, upstream_body)
    except errors.APIError:
        st.recorder.void(request_id, "upstream_error")
        raise

    def finish(usage, status: str) -> None:
        st.recorder.record(Finished(request_id, authed.key, model, usage, status, started, stream))

    if stream:
        relay = StreamRelay(resp, bool((stream_options or {}).get("include_usage")), prompt_bound, finish)
        st.recorder.track(relay.pump())
        return StreamingResponse(
            relay.body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
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
    usage = usage_from(payload)
    if usage is None:
        content = ""
        if isinstance(payload, dict):
            for choice in payload.get("choices") or ():
                content += str(((choice or {}).get("message") or {}).get("content") or "")
        usage = estimate(prompt_bound, len(content) if content else len(data))
    finish(usage, "ok")
    return Response(data, media_type="application/json")
