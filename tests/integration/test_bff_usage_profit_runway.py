"""Profit, runway and retention through the routes, on SQLite and PostgreSQL (the same
in-process app as test_bff_usage_api): amounts worked out by hand, to the µcr."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import func, select

from cg_bff.models.usage import HOURLY, REQUESTS
from cg_bff.settings import Settings
from cg_bff.usage import ingest
from cg_bff.usage.retention import purge
from creditgate.keys.v1 import keys_pb2 as kpb
from support.bff_usage import (
    DAY,
    EVENTS,
    H0,
    HOUR,
    PRINCIPAL_HEADER,
    FakeAuth,
    FakeKeys,
    fake_backends,
    iso,
    nats_server,
    partner,
    served,
    usage_event,
)


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("nats")) as stack:
        yield stack.nats_url


def keys() -> FakeKeys:
    k = FakeKeys()
    k.add_key("p1", "k1", customer_id="c1", settled_remaining_ucr=10_000_000, min_request_ucr=100)
    k.add_key("p1", "k2", settled_remaining_ucr=5_000_000)
    k.add_key("p1", "k3", kind="customer", customer_id="c2")
    auto = kpb.AutoTopUp(enabled=True, threshold_usd="0.05", amount_usd="10")
    k.add_key("p1", "k4", settled_remaining_ucr=10_000_000, min_request_ucr=100, auto_topup=auto)
    k.add_key("p1", "k5", status=kpb.KEY_STATUS_REVOKED)
    k.add_key("p2", "k9", customer_id="c9", settled_remaining_ucr=1)
    return k


class App:
    def __init__(self, client: httpx.AsyncClient, served_app) -> None:
        self.client, self.served = client, served_app

    async def get(self, path: str, who: str = "p1", **params) -> httpx.Response:
        return await self.client.get(path, params=params, headers={PRINCIPAL_HEADER: who})

    async def ok(self, path: str, who: str = "p1", **params) -> dict:
        r = await self.get(path, who, **params)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
async def app(db_url: str, nats_url: str) -> AsyncIterator[App]:
    settings = Settings(database_url=db_url, nats_url=nats_url, grpc_port=0)
    principals = {"p1": partner("p1"), "p2": partner("p2")}
    async with served(settings, fake_backends(keys()), FakeAuth(principals)) as s:
        async with httpx.AsyncClient(base_url=s.url + "/api/v1") as client:
            yield App(client, s)


async def test_profit_per_customer_key_and_model(app: App) -> None:
    now = int(time.time() * 1000)
    await ingest.store(app.served.state.engine, [ingest.row_of(e, None, now) for e in EVENTS])
    period = {"from": iso(H0), "to": iso(H0 + 2 * DAY)}
    # c1: 700 × 1.5 + 1501 × 1.5 + 1000 × 1.25 = 4551.5 -> 4551; cost 7000
    # c2: 333 × 2 = 666; cost 300.  r3 bills no customer: not in profit.  r9 is p2's.
    p = await app.ok("/partner/usage/profit", by="customer", **period)
    rows = [(r["id"], r["revenue_ucr"], r["cost_ucr"], r["margin_ucr"], r["margin_pct"]) for r in p["rows"]]
    assert rows == [("c1", 4551, 7000, -2449, "-53.81"), ("c2", 666, 300, 366, "54.95")]
    total = p["total"]
    assert (total["id"], total["revenue_ucr"], total["cost_ucr"], total["margin_ucr"]) == (None, 5217, 7300, -2083)
    assert (total["revenue_credits"], total["revenue_usd"], total["margin_usd"]) == (
        "0.005217",
        "0.00005217",
        "-0.00002083",
    )
    assert total["requests"] == 4 and total["ai_credits_uai"] == 700 + 1501 + 1000 + 333

    p = await app.ok("/partner/usage/profit", by="key", **period)
    assert [(r["id"], r["revenue_ucr"], r["cost_ucr"]) for r in p["rows"]] == [("k1", 4551, 7000), ("k3", 666, 300)]
    p = await app.ok("/partner/usage/profit", by="model", **period)
    # A: 1050 + 666 + 1250 = 2966, cost 1000 + 300 + 4000; B: 2251.5 -> 2251, cost 2000
    assert [(r["id"], r["revenue_ucr"], r["cost_ucr"]) for r in p["rows"]] == [("A", 2966, 5300), ("B", 2251, 2000)]
    # only the first day: r5 (day 2) left out
    p = await app.ok("/partner/usage/profit", by="customer", **{"from": iso(H0), "to": iso(H0 + 2 * HOUR)})
    assert [(r["id"], r["revenue_ucr"], r["cost_ucr"]) for r in p["rows"]] == [("c1", 3301, 3000), ("c2", 666, 300)]
    p2 = await app.ok("/partner/usage/profit", who="p2", by="customer", **period)
    assert [(r["id"], r["revenue_ucr"], r["cost_ucr"]) for r in p2["rows"]] == [("c9", 16_665, 99_999)]
    r = await app.get("/partner/usage/profit", by="region")
    assert r.status_code == 400 and "by" in r.json()["error"]["fields"]


async def test_runway_of_each_key(app: App) -> None:
    now = int(time.time() * 1000)
    recent = [
        usage_event("a", "p1", "k1", time_ms=now - HOUR, charged_ucr=1_400_000),
        usage_event("b", "p1", "k1", time_ms=now - 5 * HOUR, charged_ucr=1_000_000),
        usage_event("c", "p1", "k1", time_ms=now - 30 * HOUR, charged_ucr=9_999_999),  # outside the 24 h
        usage_event("d", "p1", "k4", time_ms=now - 2 * HOUR, charged_ucr=2_400_000),
        usage_event("e", "p2", "k9", time_ms=now - HOUR, charged_ucr=1),
    ]
    await ingest.store(app.served.state.engine, [ingest.row_of(e, None, now) for e in recent])
    before = int(time.time() * 1000)
    r = await app.ok("/partner/keys/k1/runway")
    after = int(time.time() * 1000)
    ahead = (10_000_000 - 100 + 1) * DAY // 2_400_000
    assert (r["event"], r["in_days"], r["spent_ucr"], r["rate_ucr_per_day"], r["line_ucr"]) == (
        "exhausted",
        "4.2",
        2_400_000,
        2_400_000,
        100,
    )
    assert before + ahead <= r["at_ms"] <= after + ahead
    r = await app.ok("/partner/keys/k4/runway")
    assert (r["event"], r["line_ucr"], r["in_days"]) == ("auto_topup", 5_000_000, "2.1")
    assert (await app.ok("/partner/keys/k2/runway"))["reason"] == "no_recent_usage"
    assert (await app.ok("/partner/keys/k3/runway"))["reason"] == "pay_as_you_go"
    assert (await app.ok("/partner/keys/k5/runway"))["reason"] == "revoked"
    assert (await app.get("/partner/keys/k9/runway")).status_code == 404  # p2's
    assert (await app.get("/partner/keys/nope/runway")).status_code == 404

    seen, cursor = [], None
    while True:
        page = await app.ok("/partner/usage/runway", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [(x["key_id"], x["event"] or x["reason"]) for x in page["data"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == [("k1", "exhausted"), ("k2", "no_recent_usage"), ("k3", "pay_as_you_go"), ("k4", "auto_topup")]
    assert [x["key_id"] for x in (await app.ok("/partner/usage/runway", who="p2"))["data"]] == ["k9"]


async def test_retention_deletes_old_rows_and_aggregates(app: App) -> None:
    engine = app.served.state.engine
    now = int(time.time() * 1000)
    old = [usage_event(f"old{i}", time_ms=now - 100 * DAY + i * HOUR) for i in range(3)]
    edge = usage_event("edge", time_ms=now - 89 * DAY)
    fresh = usage_event("fresh", time_ms=now - HOUR)
    await ingest.store(engine, [ingest.row_of(e, None, now) for e in [*old, edge, fresh]])
    purged = await purge(engine, 90, now)
    assert (purged.requests, purged.hourly) == (3, 3)
    async with engine.connect() as conn:
        ids = set((await conn.execute(select(REQUESTS.c.request_id))).scalars())
        hours = (await conn.execute(select(func.count()).select_from(HOURLY))).scalar()
    assert ids == {"edge", "fresh"} and hours == 2
    page = await app.ok("/partner/usage/requests")
    assert [x["request_id"] for x in page["data"]] == ["fresh", "edge"]
    assert await purge(engine, 90, now) == type(purged)(0, 0)  # nothing left to do
    assert await purge(engine, 0, now) == type(purged)(0, 0)  # 0: retention off
