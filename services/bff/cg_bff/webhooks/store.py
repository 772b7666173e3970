"""The webhook tables' queries. Every read and change of an endpoint or a delivery names
its partner: another partner's id is ``NotFound``, like one that does not exist.

Delivery states: ``pending`` (attempts to come) -> ``succeeded`` | ``dead``; a redeliver
takes any state back to ``pending`` in the next ``generation`` (its attempts count from 0
again; the attempts of earlier generations stay in the log). A delivery is attempted only
under its lease (``claim``), released by the attempt's report (``record_attempt``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff.models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from cglib.ids import new_id

PENDING, SUCCEEDED, DEAD = "pending", "succeeded", "dead"
STATES = (PENDING, SUCCEEDED, DEAD)
MAX_LEASE_MS = 600_000


class NotFound(Exception):
    """No such endpoint or delivery (or another partner's)."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Claim:
    """What ``claim`` decided: ``claimed`` with the delivery, endpoint and event; or not,
    with why (``busy_ms`` > 0: another worker holds the lease for that long still)."""

    delivery: WebhookDelivery | None = None
    endpoint: WebhookEndpoint | None = None
    event: WebhookEvent | None = None
    reason: str = ""
    busy_ms: int = 0


@dataclass(frozen=True)
class Attempt:
    delivery_id: str
    partner_id: str
    generation: int
    attempt: int
    outcome: str  # succeeded | retrying | dead
    status_code: int
    error: str
    response_excerpt: str
    duration_ms: int
    at_ms: int
    next_attempt_at_ms: int


class WebhookStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    # -- endpoints -------------------------------------------------------------------

    async def count_endpoints(self, partner_id: str) -> int:
        async with self.sessions() as s:
            q = select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.partner_id == partner_id)
            return int((await s.exec(q)).one())

    async def endpoint_by_idempotency(self, partner_id: str, key: str) -> WebhookEndpoint | None:
        async with self.sessions() as s:
            q = select(WebhookEndpoint).where(
                WebhookEndpoint.partner_id == partner_id, WebhookEndpoint.idempotency_key == key
            )
            return (await s.exec(q)).first()

    async def insert_endpoint(self, endpoint: WebhookEndpoint) -> tuple[WebhookEndpoint, bool]:
        """Writes a new endpoint; when a concurrent create with the same Idempotency-Key
        won, answers that one (and False)."""
        async with self.sessions() as s:
            s.add(endpoint)
            try:
                await s.commit()
                return endpoint, True
            except IntegrityError:
                await s.rollback()
        assert endpoint.idempotency_key is not None
        first = await self.endpoint_by_idempotency(endpoint.partner_id, endpoint.idempotency_key)
        if first is None:
            raise RuntimeError("endpoint insert failed without a concurrent create")
        return first, False

    async def endpoint(self, partner_id: str, endpoint_id: str) -> WebhookEndpoint:
        async with self.sessions() as s:
            ep = await s.get(WebhookEndpoint, endpoint_id)
        if ep is None or ep.partner_id != partner_id:
            raise NotFound("webhook endpoint")
        return ep

    async def list_endpoints(self, partner_id: str, after: tuple[int, str] | None, limit: int) -> list[WebhookEndpoint]:
        q = select(WebhookEndpoint).where(WebhookEndpoint.partner_id == partner_id)
        if after is not None:
            t, i = after
            q = q.where(
                or_(
                    col(WebhookEndpoint.created_at_ms) > t,
                    (col(WebhookEndpoint.created_at_ms) == t) & (col(WebhookEndpoint.id) > i),
                )
            )
        q = q.order_by(col(WebhookEndpoint.created_at_ms), col(WebhookEndpoint.id)).limit(limit)
        async with self.sessions() as s:
            return list((await s.exec(q)).all())

    async def update_endpoint(self, partner_id: str, endpoint_id: str, changes: dict[str, Any]) -> WebhookEndpoint:
        async with self.sessions() as s:
            ep = await s.get(WebhookEndpoint, endpoint_id)
            if ep is None or ep.partner_id != partner_id:
                raise NotFound("webhook endpoint")
            for name, value in changes.items():
                setattr(ep, name, value)
            ep.updated_at_ms = now_ms()
            s.add(ep)
            await s.commit()
            await s.refresh(ep)
            return ep

    async def rotate(
        self, partner_id: str, endpoint_id: str, idempotency_key: str, seal: Callable[[], str], keep_ms: int
    ) -> tuple[WebhookEndpoint, bool]:
        """A new secret (``seal()``), the current one kept signing for ``keep_ms`` more;
        a retry with the last rotation's key rotates nothing (False)."""
        async with self.sessions() as s:
            ep = await s.get(WebhookEndpoint, endpoint_id, with_for_update=True)
            if ep is None or ep.partner_id != partner_id:
                raise NotFound("webhook endpoint")
            if ep.rotation_key == idempotency_key:
                return ep, False
            now = now_ms()
            ep.previous_secret_sealed = ep.secret_sealed if keep_ms > 0 else None
            ep.previous_expires_at_ms = now + keep_ms if keep_ms > 0 else 0
            ep.secret_sealed, ep.rotation_key, ep.updated_at_ms = seal(), idempotency_key, now
            s.add(ep)
            await s.commit()
            await s.refresh(ep)
            return ep, True

    async def delete_endpoint(self, partner_id: str, endpoint_id: str) -> None:
        """The endpoint, its deliveries and their attempts (a job still queued for it finds
        nothing and is dropped)."""
        async with self.sessions() as s:
            ep = await s.get(WebhookEndpoint, endpoint_id)
            if ep is None or ep.partner_id != partner_id:
                raise NotFound("webhook endpoint")
            deliveries = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint_id)
            await s.exec(delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(deliveries)))
            await s.exec(delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint_id))
            await s.delete(ep)
            await s.commit()

    # -- events and deliveries -------------------------------------------------------

    async def record_event(self, event: WebhookEvent) -> list[WebhookDelivery]:
        """The event, once (by id), with one delivery per enabled endpoint of its partner
        subscribed to its type (the endpoints as they are when it first arrives). Answers
        the event's deliveries not attempted yet, to publish a job for: all of them the
        first time; after a repeat (a crash before the jobs were published, say) the same
        ones again (the stream's Nats-Msg-Id window and the delivery's lease make a
        duplicate job harmless)."""
        async with self.sessions() as s:
            if await s.get(WebhookEvent, event.id) is None:
                try:
                    s.add(event)
                    await s.flush()  # the event's row before the deliveries that name it
                    q = select(WebhookEndpoint).where(
                        WebhookEndpoint.partner_id == event.partner_id, col(WebhookEndpoint.enabled).is_(True)
                    )
                    for ep in (await s.exec(q)).all():
                        if event.type in ep.event_types:
                            s.add(_new_delivery(event, ep.id))
                    await s.commit()
                except IntegrityError:  # recorded by a concurrent consumer meanwhile
                    await s.rollback()
            q2 = select(WebhookDelivery).where(
                WebhookDelivery.event_id == event.id,
                WebhookDelivery.state == PENDING,
                WebhookDelivery.attempts == 0,
                WebhookDelivery.generation == 0,
            )
            return list((await s.exec(q2)).all())

    async def record_test(self, event: WebhookEvent, endpoint_id: str) -> WebhookDelivery:
        """A test event and its one delivery, to the endpoint named (not to subscribers)."""
        async with self.sessions() as s:
            delivery = _new_delivery(event, endpoint_id)
            s.add(event)
            await s.flush()  # the event's row before the delivery that names it
            s.add(delivery)
            await s.commit()
            await s.refresh(delivery)
            return delivery

    async def delivery(self, partner_id: str, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
        async with self.sessions() as s:
            d = await s.get(WebhookDelivery, delivery_id)
        if d is None or d.partner_id != partner_id or d.endpoint_id != endpoint_id:
            raise NotFound("webhook delivery")
        return d

    async def event(self, event_id: str) -> WebhookEvent | None:
        async with self.sessions() as s:
            return await s.get(WebhookEvent, event_id)

    async def list_deliveries(
        self,
        partner_id: str,
        endpoint_id: str,
        state: str | None,
        event_type: str | None,
        before: tuple[int, str] | None,
        limit: int,
    ) -> list[WebhookDelivery]:
        """Newest first."""
        q = select(WebhookDelivery).where(
            WebhookDelivery.partner_id == partner_id, WebhookDelivery.endpoint_id == endpoint_id
        )
        if state is not None:
            q = q.where(WebhookDelivery.state == state)
        if event_type is not None:
            q = q.where(WebhookDelivery.event_type == event_type)
        if before is not None:
            t, i = before
            q = q.where(
                or_(
                    col(WebhookDelivery.created_at_ms) < t,
                    (col(WebhookDelivery.created_at_ms) == t) & (col(WebhookDelivery.id) < i),
                )
            )
        q = q.order_by(col(WebhookDelivery.created_at_ms).desc(), col(WebhookDelivery.id).desc()).limit(limit)
        async with self.sessions() as s:
            return list((await s.exec(q)).all())

    async def attempts(self, delivery_id: str) -> list[WebhookAttempt]:
        q = (
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(col(WebhookAttempt.generation), col(WebhookAttempt.attempt))
        )
        async with self.sessions() as s:
            return list((await s.exec(q)).all())

    async def redeliver(self, partner_id: str, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
        """The next generation, pending, its attempts from 0 (a job of an earlier generation
        still queued is dropped when it comes)."""
        async with self.sessions() as s:
            d = await s.get(WebhookDelivery, delivery_id, with_for_update=True)
            if d is None or d.partner_id != partner_id or d.endpoint_id != endpoint_id:
                raise NotFound("webhook delivery")
            d.generation += 1
            d.state, d.attempts, d.next_attempt_at_ms, d.updated_at_ms = PENDING, 0, 0, now_ms()
            s.add(d)
            await s.commit()
            await s.refresh(d)
            return d

    # -- for the worker ----------------------------------------------------------------

    async def claim(self, partner_id: str, delivery_id: str, generation: int, lease_ms: int) -> Claim:
        lease_ms = max(1000, min(lease_ms, MAX_LEASE_MS))
        now = now_ms()
        async with self.sessions() as s:
            d = await s.get(WebhookDelivery, delivery_id)
            if d is None or d.partner_id != partner_id:
                return Claim(reason="the delivery is gone")
            if generation < d.generation:
                return Claim(reason="superseded by a redeliver")
            if d.state != PENDING:
                return Claim(reason=f"already {d.state}")
            ep = await s.get(WebhookEndpoint, d.endpoint_id)
            event = await s.get(WebhookEvent, d.event_id)
            if ep is None or event is None:
                return Claim(reason="the endpoint is gone")
            if not ep.enabled:
                d.state, d.last_error, d.updated_at_ms = DEAD, "the endpoint is disabled", now
                s.add(d)
                await s.commit()
                return Claim(reason="the endpoint is disabled")
            took = await s.exec(
                update(WebhookDelivery)
                .where(
                    col(WebhookDelivery.id) == delivery_id,
                    col(WebhookDelivery.generation) == d.generation,
                    col(WebhookDelivery.state) == PENDING,
                    col(WebhookDelivery.lease_until_ms) <= now,
                )
                .values(lease_until_ms=now + lease_ms)
            )
            if took.rowcount != 1:
                await s.rollback()
                held = await s.get(WebhookDelivery, delivery_id)
                busy = max(1000, (held.lease_until_ms if held is not None else now) - now)
                return Claim(reason="another worker is attempting it", busy_ms=busy)
            await s.commit()
            await s.refresh(d)
            return Claim(delivery=d, endpoint=ep, event=event)

    async def record_attempt(self, a: Attempt) -> tuple[str, bool]:
        """Records the attempt and moves the delivery on; answers its state and whether the
        report was stale (an older generation: nothing recorded)."""
        async with self.sessions() as s:
            d = await s.get(WebhookDelivery, a.delivery_id, with_for_update=True)
            if d is None or d.partner_id != a.partner_id:
                raise NotFound("webhook delivery")
            d.lease_until_ms = 0
            if a.generation != d.generation:
                s.add(d)
                await s.commit()
                return d.state, True
            s.add(
                WebhookAttempt(
                    delivery_id=d.id,
                    generation=a.generation,
                    attempt=a.attempt,
                    outcome=a.outcome,
                    status_code=a.status_code,
                    error=a.error[:500],
                    response_excerpt=a.response_excerpt[:500],
                    duration_ms=a.duration_ms,
                    at_ms=a.at_ms,
                )
            )
            if a.attempt > d.attempts:  # a repeated report (same attempt) moves nothing
                d.attempts = a.attempt
                d.state = {"succeeded": SUCCEEDED, "dead": DEAD}.get(a.outcome, PENDING)
                d.last_status_code, d.last_error = a.status_code, a.error[:500]
                d.last_attempt_at_ms = a.at_ms
                d.next_attempt_at_ms = a.next_attempt_at_ms if d.state == PENDING else 0
            d.updated_at_ms = now_ms()
            s.add(d)
            try:
                await s.commit()
            except IntegrityError:  # this attempt was recorded already
                await s.rollback()
                again = await s.get(WebhookDelivery, a.delivery_id)
                return (again.state if again is not None else d.state), False
            return d.state, False

    # -- upkeep ---------------------------------------------------------------------------

    async def overdue(self, due_before_ms: int, limit: int = 500) -> list[WebhookDelivery]:
        """Pending deliveries nobody holds whose attempt was due before ``due_before_ms``:
        their job was lost (the BFF stopped between its commit and the publish)."""
        now = now_ms()
        q = (
            select(WebhookDelivery)
            .where(
                WebhookDelivery.state == PENDING,
                col(WebhookDelivery.lease_until_ms) < now,
                or_(
                    (col(WebhookDelivery.next_attempt_at_ms) == 0)
                    & (col(WebhookDelivery.updated_at_ms) < due_before_ms),
                    (col(WebhookDelivery.next_attempt_at_ms) > 0)
                    & (col(WebhookDelivery.next_attempt_at_ms) < due_before_ms),
                ),
            )
            .limit(limit)
        )
        async with self.sessions() as s:
            return list((await s.exec(q)).all())

    async def prune(self, before_ms: int) -> int:
        """Drops the events recorded before ``before_ms`` with their deliveries and attempts."""
        old = select(WebhookEvent.id).where(col(WebhookEvent.created_at_ms) < before_ms)
        deliveries = select(WebhookDelivery.id).where(col(WebhookDelivery.event_id).in_(old))
        async with self.sessions() as s:
            await s.exec(delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(deliveries)))
            await s.exec(delete(WebhookDelivery).where(col(WebhookDelivery.event_id).in_(old)))
            gone = await s.exec(delete(WebhookEvent).where(col(WebhookEvent.created_at_ms) < before_ms))
            await s.commit()
            return int(gone.rowcount or 0)


def _new_delivery(event: WebhookEvent, endpoint_id: str) -> WebhookDelivery:
    now = now_ms()
    return WebhookDelivery(
        id=new_id("whd"),
        partner_id=event.partner_id,
        endpoint_id=endpoint_id,
        event_id=event.id,
        event_type=event.type,
        created_at_ms=now,
        updated_at_ms=now,
    )
