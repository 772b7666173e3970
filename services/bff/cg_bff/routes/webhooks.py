"""Webhooks: a partner's endpoints, the deliveries made to them, redeliver and test.

Reads for any of the partner's users and tokens (``PartnerReader``); changes for owners,
admins and read-write tokens (``PartnerWriter``). An endpoint's signing secret is shown
once, when it is made (create, rotate-secret: both need an ``Idempotency-Key``; a retry is
answered ``replayed`` without it). Another partner's endpoint or delivery is a 404.

A URL must be https:// to a public host: one that resolves to a loopback, private,
link-local, multicast, reserved or unspecified address (IPv4 or IPv6) is refused, 400
``unsafe_url`` (unless the BFF runs with ``CG_BFF_WEBHOOKS_ALLOW_PRIVATE``, development).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from cg_bff import errors
from cg_bff.principal import PartnerReader, PartnerWriter
from cg_bff.requests import Cursor, IdempotencyKey, Limit, Page, decode_cursor, encode_cursor
from cg_bff.tenant.idempotency import idempotent
from cg_bff.webhooks import service
from cg_bff.webhooks.schemas import (
    DeliveryStateName,
    EventTypeName,
    WebhookDeliveryDetail,
    WebhookDeliveryPublic,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointPublic,
    WebhookEndpointUpdate,
    WebhookSecretRotate,
)
from cg_bff.webhooks.service import LimitReached, NatsUnavailable, Webhooks
from cg_bff.webhooks.store import NotFound, now_ms
from cglib.egress import UnsafeUrl

router = APIRouter(prefix="/partner/webhooks", tags=["webhooks"])

EndpointId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
DeliveryId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _hooks(request: Request) -> Webhooks:
    return service.of(request.app.state.bff)


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    try:
        yield
    except NotFound as e:
        raise errors.not_found(str(e)) from None
    except UnsafeUrl as e:
        raise errors.invalid(f"The URL is refused: {e}.", {"url": str(e)}, code="unsafe_url") from None
    except LimitReached as e:
        raise errors.conflict(f"{str(e).capitalize()}.") from None
    except NatsUnavailable:
        raise errors.unavailable("event bus") from None


def _page_key(cursor: str | None, *names: str) -> tuple[int, str] | None:
    value = decode_cursor(cursor)
    if value is None:
        return None
    t, i = value.get(names[0]), value.get(names[1])
    if not isinstance(t, int) or not isinstance(i, str):
        raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"})
    return t, i


@router.get("", response_model=Page[WebhookEndpointPublic])
async def list_endpoints(
    principal: PartnerReader, request: Request, cursor: Cursor = None, limit: Limit = 50
) -> Page[WebhookEndpointPublic]:
    """The partner's endpoints, oldest first (never their secrets)."""
    rows = await _hooks(request).store.list_endpoints(principal.partner_id or "", _page_key(cursor, "t", "i"), limit)
    now = now_ms()
    after = encode_cursor({"t": rows[-1].created_at_ms, "i": rows[-1].id}) if len(rows) == limit else None
    return Page(data=[WebhookEndpointPublic.of(r, now) for r in rows], next_cursor=after)


@router.post("", response_model=WebhookEndpointCreated, status_code=201)
async def create_endpoint(
    body: WebhookEndpointCreate,
    principal: PartnerWriter,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey,
) -> WebhookEndpointCreated:
    """Registers an endpoint for the event types named. Its signing secret (``whsec_...``)
    is in this answer only; a retry with the same Idempotency-Key answers the same
    endpoint (200, ``replayed``) without it."""
    partner_id = principal.partner_id or ""
    scope = f"partner:{partner_id}"  # the same key with another body: 409 idempotency_key_reused
    async with idempotent(request.app.state.bff, scope, idempotency_key, "webhook.create", {}, body):
        with _api_errors():
            made = await _hooks(request).create(
                partner_id, idempotency_key, body.url, body.description, list(body.event_types), body.enabled
            )
    if made.secret is None:
        response.status_code = 200
    return WebhookEndpointCreated(
        endpoint=WebhookEndpointPublic.of(made.endpoint, now_ms()), secret=made.secret, replayed=made.secret is None
    )


@router.get("/{endpoint_id}", response_model=WebhookEndpointPublic)
async def get_endpoint(endpoint_id: EndpointId, principal: PartnerReader, request: Request) -> WebhookEndpointPublic:
    with _api_errors():
        ep = await _hooks(request).store.endpoint(principal.partner_id or "", endpoint_id)
    return WebhookEndpointPublic.of(ep, now_ms())


@router.patch("/{endpoint_id}", response_model=WebhookEndpointPublic)
async def update_endpoint(
    endpoint_id: EndpointId, body: WebhookEndpointUpdate, principal: PartnerWriter, request: Request
) -> WebhookEndpointPublic:
    """Changes the URL (checked like a new one), description, event types or enabled.
    A disabled endpoint gets no new deliveries, and its pending ones are dead-lettered."""
    changes = body.model_dump(exclude_unset=True)
    nulls = [name for name, value in changes.items() if value is None]
    if nulls:
        raise errors.invalid("These fields cannot be null.", {name: "not null" for name in nulls})
    with _api_errors():
        ep = await _hooks(request).update(principal.partner_id or "", endpoint_id, changes)
    return WebhookEndpointPublic.of(ep, now_ms())


@router.delete("/{endpoint_id}", status_code=204, response_class=Response)
async def delete_endpoint(endpoint_id: EndpointId, principal: PartnerWriter, request: Request) -> Response:
    """Deletes the endpoint with its deliveries (a delivery still queued is dropped)."""
    with _api_errors():
        await _hooks(request).store.delete_endpoint(principal.partner_id or "", endpoint_id)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=WebhookEndpointCreated)
async def rotate_secret(
    endpoint_id: EndpointId,
    principal: PartnerWriter,
    request: Request,
    idempotency_key: IdempotencyKey,
    body: WebhookSecretRotate | None = None,
) -> WebhookEndpointCreated:
    """A new signing secret, shown this once; the current one keeps signing beside it for
    ``keep_previous_s`` (a retry with the same Idempotency-Key rotates nothing: ``replayed``)."""
    keep_s = (body or WebhookSecretRotate()).keep_previous_s
    partner_id = principal.partner_id or ""
    ids = {"endpoint_id": endpoint_id}
    async with idempotent(request.app.state.bff, f"partner:{partner_id}", idempotency_key, "webhook.rotate", ids, body):
        with _api_errors():
            made = await _hooks(request).rotate(partner_id, endpoint_id, idempotency_key, keep_s)
    return WebhookEndpointCreated(
        endpoint=WebhookEndpointPublic.of(made.endpoint, now_ms()), secret=made.secret, replayed=made.secret is None
    )


@router.get("/{endpoint_id}/deliveries", response_model=Page[WebhookDeliveryPublic])
async def list_deliveries(
    endpoint_id: EndpointId,
    principal: PartnerReader,
    request: Request,
    state: Annotated[DeliveryStateName | None, Query(description="Only this state (dead: the dead letters).")] = None,
    event_type: Annotated[EventTypeName | None, Query(description="Only this event type.")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[WebhookDeliveryPublic]:
    """The deliveries made to this endpoint, newest first, with where each stands."""
    hooks, partner_id = _hooks(request), principal.partner_id or ""
    with _api_errors():
        await hooks.store.endpoint(partner_id, endpoint_id)
    rows = await hooks.store.list_deliveries(
        partner_id, endpoint_id, state, event_type, _page_key(cursor, "t", "i"), limit
    )
    after = encode_cursor({"t": rows[-1].created_at_ms, "i": rows[-1].id}) if len(rows) == limit else None
    return Page(data=[WebhookDeliveryPublic.of(r) for r in rows], next_cursor=after)


@router.get("/{endpoint_id}/deliveries/{delivery_id}", response_model=WebhookDeliveryDetail)
async def get_delivery(
    endpoint_id: EndpointId, delivery_id: DeliveryId, principal: PartnerReader, request: Request
) -> WebhookDeliveryDetail:
    """One delivery with the body sent and every attempt (all generations)."""
    hooks = _hooks(request)
    with _api_errors():
        d = await hooks.store.delivery(principal.partner_id or "", endpoint_id, delivery_id)
    event = await hooks.store.event(d.event_id)
    return WebhookDeliveryDetail.full(d, event.payload if event else "", await hooks.store.attempts(d.id))


@router.post("/{endpoint_id}/deliveries/{delivery_id}/redeliver", response_model=WebhookDeliveryPublic, status_code=202)
async def redeliver(
    endpoint_id: EndpointId, delivery_id: DeliveryId, principal: PartnerWriter, request: Request
) -> WebhookDeliveryPublic:
    """Sends the delivery again (whatever its state), with the same webhook-id and body:
    a new generation, its attempts and retries counted afresh."""
    with _api_errors():
        d = await _hooks(request).redeliver(principal.partner_id or "", endpoint_id, delivery_id)
    return WebhookDeliveryPublic.of(d)


@router.post("/{endpoint_id}/test", response_model=WebhookDeliveryPublic, status_code=202)
async def send_test(endpoint_id: EndpointId, principal: PartnerWriter, request: Request) -> WebhookDeliveryPublic:
    """Sends a ``webhook.test`` event to this endpoint (whatever it subscribes to), signed
    like any other; follow it in the deliveries."""
    with _api_errors():
        d = await _hooks(request).send_test(principal.partner_id or "", endpoint_id)
    return WebhookDeliveryPublic.of(d)
