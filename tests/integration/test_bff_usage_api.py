"""The usage routes in-process (uvicorn, the app's lifespan and jobs), with a fake
authenticator and keys, on SQLite and PostgreSQL: series by hour and day, the request
log's filters, paging and CSV, what a customer sees, and another tenant's ids."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from cg_bff.principal import Principal
from cg_bff.settings import Settings
from cg_bff.usage import ingest
from support.bff_usage import (
    ADMIN,
    DAY,
    EVENTS,
    H0,
    HOUR,
    NOW,
    PRINCIPAL_HEADER,
    FakeAuth,
    FakeKeys,
    customer,
    fake_backends,
    iso,
    nats_server,
    partner,
    served,
)


def fake_keys() -> FakeKeys:
    keys = FakeKeys()
    keys.add_key("p1", "k1", customer_id="c1")
    keys.add_key("p1", "k2")
    keys.add_key("p1", "k3", kind="customer", customer_id="c2")
    keys.add_key("p2", "k9", customer_id="c9")
    for p, c in (("p1", "c1"), ("p1", "c2"), ("p2", "c9")):
        keys.add_customer(p, c)
    return keys


PRINCIPALS = {
    "p1": partner("p1"),
    "p1-viewer": partner("p1", role="viewer"),
    "p1-token": Principal(kind="partner", via="token", partner_id="p1", scope="read", token_id="t1"),
    "p2": partner("p2"),
    "c1": customer("p1", "c1"),
    "c2": customer("p1", "c2"),
    "c9": customer("p2", "c9"),
    "admin": ADMIN,
}


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("nats")) as stack:
        yield stack.nats_url


@pytest.fixture
async def api(db_url: str, nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=db_url, nats_url=nats_url, grpc_port=0)
    async with served(settings, fake_backends(fake_keys()), FakeAuth(PRINCIPALS)) as app:
        rows = [ingest.row_of(e, None, NOW) for e in EVENTS]
        await ingest.store(app.state.engine, rows)
        async with httpx.AsyncClient(base_url=app.url + "/api/v1") as client:
            yield client


async def get(api: httpx.AsyncClient, who: str | None, path: str, **params) -> httpx.Response:
    headers = {PRINCIPAL_HEADER: who} if who else {}
    return await api.get(path, params=params, headers=headers)


async def ok(api: httpx.AsyncClient, who: str, path: str, **params) -> dict:
    r = await get(api, who, path, **params)
    assert r.status_code == 200, r.text
    return r.json()


def refused(r: httpx.Response, status: int, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"code", "message", "fields"}
    if field is not None:
        assert field in body["error"]["fields"], body


async def test_partner_series_by_hour(api) -> None:
    s = await ok(api, "p1", "/partner/usage/series", granularity="hour", **{"from": iso(H0), "to": iso(H0 + 3 * HOUR)})
    points = s["points"]
    assert [p["start_ms"] for p in points] == [H0, H0 + HOUR, H0 + 2 * HOUR]
    assert [p["requests"] for p in points] == [2, 2, 0]
    assert [p["cost_ucr"] for p in points] == [3000, 800, 0]
    assert [p["cost_credits"] for p in points] == ["0.003000", "0.000800", "0.000000"]
    assert [p["input_tokens"] for p in points] == [30, 70, 0]
    assert [p["ai_credits_uai"] for p in points] == [2201, 333, 0]
    # revenue: 700 × 1.5 + 1501 × 1.5 = 3301.5 -> 3301; 333 × 2 = 666 (r3 bills no customer)
    assert [p["revenue_ucr"] for p in points] == [3301, 666, 0]
    assert [p["margin_ucr"] for p in points] == [301, 366, 0]
    assert [p["estimated_requests"] for p in points] == [0, 1, 0]
    assert [p["error_requests"] for p in points] == [0, 1, 0]
    assert [p["avg_latency_ms"] for p in points] == [200, 120, None]


async def test_partner_series_by_day_and_per_subject(api) -> None:
    day0 = H0 - H0 % DAY
    period = {"from": iso(day0 + 5 * HOUR), "to": iso(day0 + 2 * DAY)}  # from rounds down to its day
    s = await ok(api, "p1", "/partner/usage/series", granularity="day", **period)
    assert [(p["start_ms"], p["requests"], p["cost_ucr"]) for p in s["points"]] == [
        (day0, 4, 3800),
        (day0 + DAY, 1, 4000),
    ]
    assert s["points"][1]["revenue_ucr"] == 1250 and s["points"][1]["margin_ucr"] == -2750

    def totals(series: dict) -> tuple[int, int]:
        return sum(p["requests"] for p in series["points"]), sum(p["cost_ucr"] for p in series["points"])

    by = {"granularity": "day", **period}
    assert totals(await ok(api, "p1", "/partner/usage/series", by="key", id="k1", **by)) == (3, 7000)
    assert totals(await ok(api, "p1", "/partner/usage/series", by="customer", id="c2", **by)) == (1, 300)
    assert totals(await ok(api, "p1", "/partner/usage/series", by="model", id="A", **by)) == (4, 5800)
    assert totals(await ok(api, "p1", "/partner/usage/series", by="model", id="none", **by)) == (0, 0)
    assert totals(await ok(api, "p2", "/partner/usage/series", **by)) == (1, 99_999)


async def test_series_refusals(api) -> None:
    refused(await get(api, "p1", "/partner/usage/series", by="key", id="k9"), 404)  # p2's key
    refused(await get(api, "p1", "/partner/usage/series", by="customer", id="c9"), 404)  # p2's customer
    refused(await get(api, "p1", "/partner/usage/series", by="key", id="nope"), 404)
    refused(await get(api, "p1", "/partner/usage/series", by="key"), 400, "id")
    refused(await get(api, "p1", "/partner/usage/series", id="k1"), 400, "id")
    long = {"from": iso(NOW - 91 * DAY), "to": iso(NOW)}
    refused(await get(api, "p1", "/partner/usage/series", granularity="hour", **long), 400, "from")
    assert (await get(api, "p1", "/partner/usage/series", granularity="day", **long)).status_code == 200
    refused(await get(api, "p1", "/partner/usage/series", **{"from": iso(NOW), "to": iso(NOW - HOUR)}), 400, "to")
    refused(await get(api, "p1", "/partner/usage/series", granularity="week"), 400, "granularity")


async def test_request_log_filters_and_paging(api) -> None:
    async def ids(who: str, path: str = "/partner/usage/requests", **params) -> list[str]:
        return [r["request_id"] for r in (await ok(api, who, path, **params))["data"]]

    assert await ids("p1") == ["r5", "r4", "r3", "r2", "r1"]  # newest first, only p1's
    assert await ids("p2") == ["r9"]
    assert await ids("p1", key_id="k1") == ["r5", "r2", "r1"]
    assert await ids("p1", customer_id="c1") == ["r5", "r2", "r1"]
    assert await ids("p1", model="B") == ["r2"]
    assert await ids("p1", outcome="upstream_error") == ["r4"]
    assert await ids("p1", source="estimated") == ["r4"]
    assert await ids("p1", **{"from": iso(H0 + HOUR), "to": iso(H0 + 2 * HOUR)}) == ["r4", "r3"]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await ok(api, "p1", "/partner/usage/requests", **params)
        seen += [r["request_id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["r5", "r4", "r3", "r2", "r1"]
    row = (await ok(api, "p1", "/partner/usage/requests", model="B"))["data"][0]
    assert row | {"time": None} == {
        "request_id": "r2", "time": None, "time_ms": H0 + 120_000, "key_id": "k1", "customer_id": "c1",
        "model": "B", "input_tokens": 20, "output_tokens": 2, "cost_ucr": 2000, "cost_credits": "0.002000",
        "ai_credits_uai": 1501, "ai_credits": "0.001501", "ai_credit_price_cents": "1.5", "source": "reported",
        "outcome": "ok", "latency_ms": 300, "stream": False, "price_book_version": "pb-1",
    }  # fmt: skip
    refused(await get(api, "p1", "/partner/usage/requests", key_id="k9"), 404)
    refused(await get(api, "p1", "/partner/usage/requests", customer_id="c9"), 404)
    refused(await get(api, "p1", "/partner/usage/requests", cursor="bm90LWEtY3Vyc29y"), 400, "cursor")
    refused(await get(api, "p1", "/partner/usage/requests", outcome="bad"), 400, "outcome")


async def test_request_log_as_csv(api) -> None:
    r = await get(api, "p1", "/partner/usage/requests", format="csv", key_id="k1")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["request_id"] for x in rows] == ["r5", "r2", "r1"]
    assert [int(x["cost_ucr"]) for x in rows] == [4000, 2000, 1000]
    assert rows[1]["ai_credit_price_cents"] == "1.5" and rows[1]["customer_id"] == "c1"
    r = await get(api, "c1", "/customer/usage/requests", format="csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["request_id"] for x in rows] == ["r5", "r2", "r1"]
    assert "cost_ucr" not in rows[0] and "customer_id" not in rows[0]
    assert [int(x["ai_credits_uai"]) for x in rows] == [1000, 1501, 700]


async def test_a_customer_sees_only_its_own_usage(api) -> None:
    page = await ok(api, "c1", "/customer/usage/requests")
    assert [r["request_id"] for r in page["data"]] == ["r5", "r2", "r1"]
    assert all("cost_ucr" not in r and "customer_id" not in r for r in page["data"])
    assert [r["request_id"] for r in (await ok(api, "c2", "/customer/usage/requests"))["data"]] == ["r4"]
    assert [r["request_id"] for r in (await ok(api, "c9", "/customer/usage/requests"))["data"]] == ["r9"]
    day0 = H0 - H0 % DAY
    s = await ok(
        api, "c1", "/customer/usage/series", granularity="day", **{"from": iso(day0), "to": iso(day0 + 2 * DAY)}
    )
    assert [(p["requests"], p["ai_credits_uai"]) for p in s["points"]] == [(2, 2201), (1, 1000)]
    assert all("cost_ucr" not in p and "revenue_ucr" not in p for p in s["points"])
    s = await ok(api, "c1", "/customer/usage/series", key_id="k1", granularity="day", **{"from": iso(day0)})
    assert sum(p["requests"] for p in s["points"]) == 3
    refused(await get(api, "c1", "/customer/usage/series", key_id="k3"), 404)  # c2's key
    refused(await get(api, "c1", "/customer/usage/requests", key_id="k2"), 404)  # bills no customer
    refused(await get(api, "c1", "/customer/usage/requests", key_id="k9"), 404)  # another partner's


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/partner/usage/series", {"p1", "p1-viewer", "p1-token", "p2"}),
        ("/partner/usage/requests", {"p1", "p1-viewer", "p1-token", "p2"}),
        ("/partner/usage/profit", {"p1", "p1-viewer", "p1-token", "p2"}),
        ("/partner/usage/runway", {"p1", "p1-viewer", "p1-token", "p2"}),
        ("/partner/keys/k1/runway", {"p1", "p1-viewer", "p1-token"}),
        ("/customer/usage/series", {"c1", "c2", "c9"}),
        ("/customer/usage/requests", {"c1", "c2", "c9"}),
    ],
)
async def test_who_may_call_what(api, path: str, allowed: set[str]) -> None:
    refused(await get(api, None, path), 401)
    for who in PRINCIPALS:
        r = await get(api, who, path)
        if who in allowed:
            assert r.status_code == 200, (who, r.text)
        else:
            refused(r, 404 if who == "p2" and "/keys/" in path else 403)  # p2: not its key


async def test_the_routes_are_described(api) -> None:
    spec = (await api.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/api/v1/partner/usage/series",
        "/api/v1/partner/usage/requests",
        "/api/v1/partner/usage/profit",
        "/api/v1/partner/usage/runway",
        "/api/v1/partner/keys/{key_id}/runway",
        "/api/v1/customer/usage/series",
        "/api/v1/customer/usage/requests",
        "/api/v1/events",
    ):
        assert "get" in paths[path], path
    assert "text/csv" in paths["/api/v1/partner/usage/requests"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in paths["/api/v1/events"]["get"]["responses"]["200"]["content"]
