"""GET /events: the signed-in tenant's live usage, balance and key changes, as
server-sent events (``cg_bff.usage.live`` says what each principal gets and when a
stream ends). A partner's users and tokens, and a customer's users, may listen; a
platform admin has no tenant to follow (403). Without NATS: 503."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cg_bff import errors
from cg_bff.principal import Authenticated, Principal
from cg_bff.routes.usage import keys_stub
from cg_bff.state import BffState
from cg_bff.usage.live import Connection, EventStream, hub_of, subjects
from creditgate.keys.v1 import keys_pb2 as kpb

router = APIRouter(tags=["live"])

EVENTS_DOC = (
    "A text/event-stream. Events: `usage` (LiveUsage JSON: a metered request, its tokens, its cost "
    "(partners only) and the customer's AI credits), `balance` (partners: the partner's balance after a "
    "movement) and `key` (a key's lifecycle change). A comment line every ~15 s; no replay on reconnect."
)


@router.get(
    "/events",
    response_class=EventStream,
    status_code=200,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": EVENTS_DOC}},
)
async def events(request: Request, principal: Authenticated) -> Response:
    state: BffState = request.app.state.bff
    subjects(principal)  # 403 for anyone without a tenant to follow
    hub = hub_of(state)
    nc = state.nats
    if nc is None or not nc.is_connected or hub.closing:
        raise errors.unavailable("live updates")

    async def key_visible(key_id: str) -> bool:
        return await _key_visible(state, principal, key_id)

    return EventStream(Connection(hub, nc, principal, key_visible))


async def _key_visible(state: BffState, principal: Principal, key_id: str) -> bool:
    """Whether keys shows this key to the principal (a customer: its own, or billed to it)."""
    try:
        await state.backends.call(
            keys_stub(state).GetKey, kpb.GetKeyRequest(actor=principal.actor(), key_id=key_id), what="key"
        )
    except errors.ApiError as e:
        if e.status == 404:
            return False
        raise
    return True
