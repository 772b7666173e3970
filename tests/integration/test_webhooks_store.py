"""The webhook tables (cg_bff.webhooks.store) on SQLite and PostgreSQL: an event is recorded
once and fans out to the enabled endpoints of its partner subscribed to its type; only the
lease holder attempts; a repeated attempt report changes nothing; a stale report (after a
redeliver) is not recorded; overdue deliveries are found; old events are pruned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff.app import MIGRATIONS
from cg_bff.models.webhooks import WebhookEndpoint, WebhookEvent
from cg_bff.webhooks.store import Attempt, WebhookStore, now_ms
from cglib.db import make_engine, migrate


@pytest.fixture
async def store(db_url) -> AsyncIterator[WebhookStore]:
    engine = make_engine(db_url)
    await migrate(engine, MIGRATIONS)
    yield WebhookStore(async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False))
    await engine.dispose()


async def endpoint(store: WebhookStore, ep_id: str, partner: str, types: list[str], enabled: bool = True) -> None:
    t = now_ms()
    row = WebhookEndpoint(
        id=ep_id,
        partner_id=partner,
        url="https://93.184.216.34/h",
        event_types=types,
        enabled=enabled,
        secret_sealed="plain.whsec_x",
        idempotency_key=ep_id,
        created_at_ms=t,
        updated_at_ms=t,
    )
    await store.insert_endpoint(row)


def event(event_id: str, partner: str = "pa", type_: str = "key.exhausted", created: int | None = None) -> WebhookEvent:
    t = created or now_ms()
    return WebhookEvent(id=event_id, partner_id=partner, type=type_, occurred_at_ms=t, payload="{}", created_at_ms=t)


def attempt(d_id: str, n: int, outcome: str, generation: int = 0, partner: str = "pa") -> Attempt:
    return Attempt(d_id, partner, generation, n, outcome, 500, "HTTP 500", "", 3, now_ms(), 0)


async def test_an_event_fans_out_once_to_its_partners_subscribed_enabled_endpoints(store):
    await endpoint(store, "e1", "pa", ["key.exhausted", "key.resumed"])
    await endpoint(store, "e2", "pa", ["key.resumed"])
    await endpoint(store, "e3", "pa", ["key.exhausted"], enabled=False)
    await endpoint(store, "e4", "pb", ["key.exhausted"])
    first = await store.record_event(event("key_exhausted:k1:1"))
    assert [d.endpoint_id for d in first] == ["e1"]
    again = await store.record_event(event("key_exhausted:k1:1"))  # redelivered: not tried yet, same delivery
    assert [d.id for d in again] == [first[0].id]
    claimed = await store.claim("pa", first[0].id, 0, 30_000)
    assert claimed.delivery is not None
    await store.record_attempt(attempt(first[0].id, 1, "succeeded"))
    assert await store.record_event(event("key_exhausted:k1:1")) == []  # delivered: nothing to publish again
    # concurrent records of one event make one delivery per endpoint
    results = await asyncio.gather(*(store.record_event(event("key_exhausted:k2:1")) for _ in range(4)))
    assert {d.id for r in results for d in r} == {results[0][0].id}


async def test_only_the_lease_holder_attempts(store):
    await endpoint(store, "e1", "pa", ["key.exhausted"])
    (d,) = await store.record_event(event("key_exhausted:k1:1"))
    assert (await store.claim("pb", d.id, 0, 30_000)).reason == "the delivery is gone"  # another partner's
    first = await store.claim("pa", d.id, 0, 30_000)
    second = await store.claim("pa", d.id, 0, 30_000)
    assert first.delivery is not None and second.delivery is None and second.busy_ms > 20_000
    state, stale = await store.record_attempt(attempt(d.id, 1, "retrying"))
    assert (state, stale) == ("pending", False)
    assert (await store.claim("pa", d.id, 0, 30_000)).delivery is not None  # released by the report
    # the same report twice: one attempt recorded
    await store.record_attempt(attempt(d.id, 2, "dead"))
    state, _ = await store.record_attempt(attempt(d.id, 2, "dead"))
    assert state == "dead" and len(await store.attempts(d.id)) == 2
    assert (await store.claim("pa", d.id, 0, 30_000)).reason == "already dead"


async def test_a_report_of_an_older_generation_is_not_recorded(store):
    await endpoint(store, "e1", "pa", ["key.exhausted"])
    (d,) = await store.record_event(event("key_exhausted:k1:1"))
    await store.claim("pa", d.id, 0, 30_000)
    redelivered = await store.redeliver("pa", "e1", d.id)
    assert (redelivered.generation, redelivered.state) == (1, "pending")
    state, stale = await store.record_attempt(attempt(d.id, 1, "succeeded", generation=0))
    assert (state, stale) == ("pending", True) and await store.attempts(d.id) == []
    assert (await store.claim("pa", d.id, 0, 30_000)).reason == "superseded by a redeliver"
    assert (await store.claim("pa", d.id, 1, 30_000)).delivery is not None


async def test_a_disabled_endpoint_dead_letters_its_pending_delivery(store):
    await endpoint(store, "e1", "pa", ["key.exhausted"])
    (d,) = await store.record_event(event("key_exhausted:k1:1"))
    await store.update_endpoint("pa", "e1", {"enabled": False})
    claim = await store.claim("pa", d.id, 0, 30_000)
    assert claim.delivery is None and claim.reason == "the endpoint is disabled"
    (listed,) = await store.list_deliveries("pa", "e1", "dead", None, None, 10)
    assert listed.last_error == "the endpoint is disabled"


async def test_overdue_deliveries_are_found_and_old_events_pruned(store):
    await endpoint(store, "e1", "pa", ["key.exhausted"])
    (d,) = await store.record_event(event("key_exhausted:k1:1", created=now_ms() - 3_600_000))
    assert await store.overdue(now_ms() - 60_000) == []  # updated just now
    assert [o.id for o in await store.overdue(now_ms() + 1)] == [d.id]
    await store.claim("pa", d.id, 0, 30_000)
    assert await store.overdue(now_ms() + 1) == []  # held
    assert await store.prune(now_ms() - 7_200_000) == 0
    assert await store.prune(now_ms() - 60_000) == 1
    assert await store.event("key_exhausted:k1:1") is None
    assert await store.list_deliveries("pa", "e1", None, None, None, 10) == []


async def test_deleting_an_endpoint_takes_its_deliveries(store):
    await endpoint(store, "e1", "pa", ["key.exhausted"])
    (d,) = await store.record_event(event("key_exhausted:k1:1"))
    await store.record_attempt(attempt(d.id, 1, "retrying"))
    await store.delete_endpoint("pa", "e1")
    assert (await store.claim("pa", d.id, 0, 30_000)).reason == "the delivery is gone"
