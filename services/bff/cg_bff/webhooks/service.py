"""What the webhook routes, the event consumer and the worker's gRPC service call.

Built once per app (``of(state)``) from the settings, the database and the NATS
connection. Raises ``store.NotFound``, ``egress.UnsafeUrl``, ``LimitReached`` and
``NatsUnavailable``; the routes turn them into the API's errors.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cg_bff.models.webhooks import WebhookDelivery, WebhookEndpoint, WebhookEvent
from cg_bff.state import BffState
from cg_bff.webhooks import events, secretbox
from cg_bff.webhooks.store import Attempt, Claim, WebhookStore, now_ms
from cglib import egress, natsx
from cglib.ids import new_id, random_base62
from creditgate.bff.v1 import bff_pb2

log = logging.getLogger(__name__)

EXTRA = "webhooks"
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_EVENT_ID = 200


class LimitReached(Exception):
    """The partner has as many endpoints as it may."""


class NatsUnavailable(Exception):
    """A job could not be published (NATS is not connected, or refused it)."""


class BadEvent(ValueError):
    """A WebhookEvent that cannot be recorded (poison: dropped)."""


class InvalidArgument(ValueError):
    """A worker's request that is not valid."""


@dataclass(frozen=True)
class Created:
    endpoint: WebhookEndpoint
    secret: str | None  # shown once; None when the request was a replay


def iso_ms(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Webhooks:
    def __init__(self, state: BffState) -> None:
        self.state = state
        self.settings = state.settings
        self.store = WebhookStore(state.sessions)
        self.box = secretbox.SecretBox(secretbox.parse_keys(self.settings.webhook_secret_keys.get_secret_value()))
        self._stream_ready = False
        if not self.box.encrypts:
            log.warning("webhook secrets are stored unsealed: set CG_BFF_WEBHOOK_SECRET_KEYS in production")

    # -- endpoints ---------------------------------------------------------------------

    async def check_url(self, url: str) -> None:
        await egress.check_url(url, self.settings.webhooks_allow_private)

    async def create(
        self,
        partner_id: str,
        idempotency_key: str,
        url: str,
        description: str,
        event_types: list[str],
        enabled: bool,
    ) -> Created:
        first = await self.store.endpoint_by_idempotency(partner_id, idempotency_key)
        if first is not None:
            return Created(first, None)
        await self.check_url(url)
        if await self.store.count_endpoints(partner_id) >= self.settings.webhooks_max_endpoints:
            raise LimitReached(f"a partner may register at most {self.settings.webhooks_max_endpoints} endpoints")
        endpoint_id, secret, now = new_id("whe"), secretbox.new_secret(), now_ms()
        row = WebhookEndpoint(
            id=endpoint_id,
            partner_id=partner_id,
            url=url,
            description=description,
            event_types=sorted(set(event_types)),
            enabled=enabled,
            secret_sealed=self.box.seal(secret, endpoint_id),
            idempotency_key=idempotency_key,
            created_at_ms=now,
            updated_at_ms=now,
        )
        ep, new = await self.store.insert_endpoint(row)
        return Created(ep, secret if new else None)

    async def update(self, partner_id: str, endpoint_id: str, changes: dict[str, Any]) -> WebhookEndpoint:
        await self.store.endpoint(partner_id, endpoint_id)  # another partner's: NotFound before the URL check
        if "url" in changes:
            await self.check_url(changes["url"])
        if "event_types" in changes:
            changes["event_types"] = sorted(set(changes["event_types"]))
        return await self.store.update_endpoint(partner_id, endpoint_id, changes)

    async def rotate(self, partner_id: str, endpoint_id: str, idempotency_key: str, keep_s: int) -> Created:
        secret = secretbox.new_secret()
        ep, rotated = await self.store.rotate(
            partner_id, endpoint_id, idempotency_key, lambda: self.box.seal(secret, endpoint_id), keep_s * 1000
        )
        return Created(ep, secret if rotated else None)

    # -- events, deliveries, jobs ----------------------------------------------------------

    async def on_event(self, event: bff_pb2.WebhookEvent) -> int:
        """Records a worker's event and publishes a job per new delivery; answers how many."""
        row = _event_row(event)
        deliveries = await self.store.record_event(row)
        for d in deliveries:
            await self.publish_job(d)
        return len(deliveries)

    async def send_test(self, partner_id: str, endpoint_id: str) -> WebhookDelivery:
        await self.store.endpoint(partner_id, endpoint_id)
        self._nats()  # refuse before recording a test that could not be sent now
        t = now_ms()
        event_id = f"webhook_test:{endpoint_id}:{t}{random_base62(6)}"
        body = {
            "id": event_id,
            "type": events.TEST,
            "timestamp": iso_ms(t),
            "partner_id": partner_id,
            "data": {"endpoint_id": endpoint_id, "message": "A test event, sent on request."},
        }
        row = WebhookEvent(
            id=event_id,
            partner_id=partner_id,
            type=events.TEST,
            occurred_at_ms=t,
            payload=json.dumps(body, separators=(",", ":")),
            created_at_ms=t,
        )
        delivery = await self.store.record_test(row, endpoint_id)
        await self.publish_job(delivery)
        return delivery

    async def redeliver(self, partner_id: str, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
        await self.store.delivery(partner_id, endpoint_id, delivery_id)
        self._nats()  # refuse before changing anything when the job cannot be published
        delivery = await self.store.redeliver(partner_id, endpoint_id, delivery_id)
        await self.publish_job(delivery)
        return delivery

    def _nats(self) -> Any:
        nc = self.state.nats
        if nc is None or not nc.is_connected:
            raise NatsUnavailable("NATS is not connected")
        return nc

    async def publish_job(self, d: WebhookDelivery) -> None:
        js = self._nats().jetstream()
        job = bff_pb2.WebhookJob(delivery_id=d.id, partner_id=d.partner_id, generation=d.generation)
        try:
            if not self._stream_ready:
                await natsx.ensure_webhooks_stream(js)
                self._stream_ready = True
            await js.publish(
                natsx.webhook_job_subject(d.partner_id),
                job.SerializeToString(),
                headers={"Nats-Msg-Id": f"{d.id}:{d.generation}"},
                timeout=2,
            )
        except Exception as e:  # nats raises several unrelated types
            raise NatsUnavailable(repr(e)) from e

    # -- the worker's calls ------------------------------------------------------------

    async def claim(self, request: bff_pb2.ClaimDeliveryRequest) -> bff_pb2.ClaimDeliveryResponse:
        c: Claim = await self.store.claim(request.partner_id, request.delivery_id, request.generation, request.lease_ms)
        if c.delivery is None or c.endpoint is None or c.event is None:
            outcome = bff_pb2.CLAIM_OUTCOME_BUSY if c.busy_ms else bff_pb2.CLAIM_OUTCOME_SKIP
            return bff_pb2.ClaimDeliveryResponse(outcome=outcome, reason=c.reason, retry_after_ms=c.busy_ms)
        ep, d = c.endpoint, c.delivery
        secrets = [self.box.open(ep.secret_sealed, ep.id)]
        if ep.previous_secret_sealed and ep.previous_expires_at_ms > now_ms():
            secrets.append(self.box.open(ep.previous_secret_sealed, ep.id))
        return bff_pb2.ClaimDeliveryResponse(
            outcome=bff_pb2.CLAIM_OUTCOME_CLAIMED,
            delivery=bff_pb2.Delivery(
                delivery_id=d.id,
                partner_id=d.partner_id,
                endpoint_id=ep.id,
                event_id=d.event_id,
                event_type=events.BY_NAME.get(d.event_type, bff_pb2.WEBHOOK_EVENT_TYPE_UNSPECIFIED),
                url=ep.url,
                secrets=secrets,
                payload=c.event.payload.encode(),
                generation=d.generation,
                attempts=d.attempts,
            ),
        )

    async def record(self, r: bff_pb2.RecordAttemptRequest) -> bff_pb2.RecordAttemptResponse:
        outcome = {
            bff_pb2.ATTEMPT_OUTCOME_SUCCEEDED: "succeeded",
            bff_pb2.ATTEMPT_OUTCOME_RETRYING: "retrying",
            bff_pb2.ATTEMPT_OUTCOME_DEAD: "dead",
        }.get(r.outcome)
        if outcome is None or r.attempt < 1:
            raise InvalidArgument("outcome and attempt (>= 1) are required")
        state, stale = await self.store.record_attempt(
            Attempt(
                delivery_id=r.delivery_id,
                partner_id=r.partner_id,
                generation=r.generation,
                attempt=r.attempt,
                outcome=outcome,
                status_code=r.status_code,
                error=r.error,
                response_excerpt=r.response_excerpt,
                duration_ms=r.duration_ms,
                at_ms=r.time_unix_ms or now_ms(),
                next_attempt_at_ms=r.next_attempt_unix_ms,
            )
        )
        pb_state = {
            "pending": bff_pb2.DELIVERY_STATE_PENDING,
            "succeeded": bff_pb2.DELIVERY_STATE_SUCCEEDED,
            "dead": bff_pb2.DELIVERY_STATE_DEAD,
        }[state]
        return bff_pb2.RecordAttemptResponse(state=pb_state, stale=stale)


def _event_row(e: bff_pb2.WebhookEvent) -> WebhookEvent:
    name = events.NAMES.get(e.type)
    if name is None or name == events.TEST:
        raise BadEvent(f"event {e.id!r}: type {e.type} is not one the worker publishes")
    if not e.id or len(e.id) > MAX_EVENT_ID or "." in e.id or not e.id.isprintable():
        raise BadEvent(f"event id {e.id[:MAX_EVENT_ID]!r}: 1 to {MAX_EVENT_ID} printable characters, no '.'")
    if not e.partner_id or len(e.partner_id) > 64:
        raise BadEvent(f"event {e.id!r}: no partner")
    if len(e.payload) > MAX_PAYLOAD_BYTES:
        raise BadEvent(f"event {e.id!r}: payload over {MAX_PAYLOAD_BYTES} bytes")
    try:
        payload = e.payload.decode()
        if not isinstance(json.loads(payload), dict):
            raise ValueError("not an object")
    except ValueError:
        raise BadEvent(f"event {e.id!r}: payload is not a JSON object") from None
    return WebhookEvent(
        id=e.id,
        partner_id=e.partner_id,
        type=name,
        occurred_at_ms=e.time_unix_ms or now_ms(),
        payload=payload,
        created_at_ms=int(time.time() * 1000),
    )


def of(state: BffState) -> Webhooks:
    """The app's one ``Webhooks`` (made at first use)."""
    found = state.extras.get(EXTRA)
    if found is None:
        found = state.extras[EXTRA] = Webhooks(state)
    return found
