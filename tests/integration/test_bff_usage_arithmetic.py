"""Profit and runway arithmetic, worked out by hand (exact integers and Decimals), and the
pieces of ingestion that decide what a row holds."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cg_bff.usage import ingest
from cg_bff.usage.profit import Profit
from cg_bff.usage.queries import Sums, revenue_ucr
from cg_bff.usage.runway import DAY_MS, HOUR_MS, runway
from cg_bff.usage.schemas import ai_credits, credits, usd
from creditgate.keys.v1 import keys_pb2 as kpb
from support.bff_usage import usage_event

NOW = 1_800_000_000_000  # a fixed instant, ms


def detail(
    settled: int,
    *,
    min_request: int = 100,
    created_ms_ago: int = 30 * DAY_MS,
    topup: tuple[str, str] | None = None,
    kind: str = "partner",
    status: int = kpb.KEY_STATUS_ACTIVE,
) -> kpb.KeyDetail:
    key = kpb.Key(id="k", kind=kind, status=status, created_at_unix=(NOW - created_ms_ago) // 1000)
    if topup is not None:
        key.auto_topup.CopyFrom(kpb.AutoTopUp(enabled=True, threshold_usd=topup[0], amount_usd=topup[1]))
    return kpb.KeyDetail(key=key, settled_remaining_ucr=settled, min_request_ucr=min_request)


@pytest.mark.parametrize(
    ("uai", "cents", "expected"),
    [
        (1_000_000, "1", Decimal(1_000_000)),  # 1 AI credit at 1 cent = $0.01 = 1 credit
        (700, "1.5", Decimal(1050)),
        (1501, "1.5", Decimal("2251.5")),
        (3, "0.333", Decimal("0.999")),
        (0, "2", Decimal(0)),
        (5, "", Decimal(0)),  # no price: not valued
    ],
)
def test_revenue_of_ai_credits(uai: int, cents: str, expected: Decimal) -> None:
    assert revenue_ucr(uai, cents) == expected


def test_profit_rounds_revenue_down_once_and_computes_the_margin() -> None:
    p = Profit("c1", Sums(billed_cost_ucr=3000, revenue_ucr_exact=Decimal("3301.5")))
    assert (p.revenue_ucr, p.cost_ucr, p.margin_ucr) == (3301, 3000, 301)
    assert p.margin_pct == Decimal("9.12")  # 301 / 3301 = 9.1184...%
    loss = Profit("c1", Sums(billed_cost_ucr=7000, revenue_ucr_exact=Decimal("4551.5")))
    assert (loss.revenue_ucr, loss.margin_ucr, loss.margin_pct) == (4551, -2449, Decimal("-53.81"))
    assert Profit("x", Sums(billed_cost_ucr=5)).margin_pct is None


def test_display_strings_are_exact() -> None:
    assert credits(1_234_567) == "1.234567"
    assert credits(0) == "0.000000"
    assert credits(-2_449) == "-0.002449"
    assert usd(1_250_000) == "0.01250000"
    assert ai_credits(1501) == "0.001501"


def test_runway_to_exhaustion() -> None:
    # 2,400,000 µcr in the last 24 h; 10,000,000 left; the line is the cheapest request (100)
    r = runway(detail(10_000_000), spent_ucr=2_400_000, now_ms=NOW)
    to_spend = 10_000_000 - 100 + 1
    ahead = to_spend * DAY_MS // 2_400_000  # 359,996,436 ms
    assert (r.event, r.line_ucr, r.at_ms, r.in_days) == ("exhausted", 100, NOW + ahead, Decimal("4.2"))
    assert (r.window_ms, r.rate_ucr_per_day, r.reason) == (DAY_MS, 2_400_000, None)


def test_runway_to_auto_top_up() -> None:
    # threshold $0.05 = 5,000,000 µcr: the top-up fires first
    r = runway(detail(10_000_000, topup=("0.05", "10")), spent_ucr=2_400_000, now_ms=NOW)
    ahead = (10_000_000 - 5_000_000 + 1) * DAY_MS // 2_400_000
    assert (r.event, r.line_ucr, r.at_ms, r.in_days) == ("auto_topup", 5_000_000, NOW + ahead, Decimal("2.1"))
    # a fractional threshold rounds up to a whole µcr: $0.000000015 -> 1.5 -> 2 µcr
    r = runway(detail(1_000, min_request=1, topup=("0.000000015", "1")), spent_ucr=1_000, now_ms=NOW)
    assert (r.event, r.line_ucr) == ("auto_topup", 2)
    # already below its threshold (the top-up failed): the budget's end is what comes
    r = runway(detail(4_000_000, topup=("0.05", "10")), spent_ucr=2_400_000, now_ms=NOW)
    assert (r.event, r.line_ucr) == ("exhausted", 100)


def test_runway_window_of_a_young_key() -> None:
    # 6 hours old: the rate is over its 6 hours, not 24
    r = runway(detail(3_000_000, created_ms_ago=6 * HOUR_MS), spent_ucr=600_000, now_ms=NOW)
    assert r.window_ms == 6 * HOUR_MS and r.rate_ucr_per_day == 2_400_000
    ahead = (3_000_000 - 100 + 1) * 6 * HOUR_MS // 600_000
    assert r.at_ms == NOW + ahead
    # 10 minutes old: at least an hour
    r = runway(detail(3_000_000, created_ms_ago=600_000), spent_ucr=100_000, now_ms=NOW)
    assert r.window_ms == HOUR_MS and r.rate_ucr_per_day == 2_400_000


@pytest.mark.parametrize(
    ("d", "spent", "reason"),
    [
        (detail(1_000_000), 0, "no_recent_usage"),
        (detail(1_000_000, kind="customer"), 50, "pay_as_you_go"),
        (detail(1_000_000, status=kpb.KEY_STATUS_REVOKED), 50, "revoked"),
        (detail(1_000_000, status=kpb.KEY_STATUS_SUSPENDED), 50, "suspended"),
        (detail(1_000_000, status=kpb.KEY_STATUS_EXHAUSTED), 50, "exhausted"),
        (detail(99), 50, "exhausted"),  # cannot pay its cheapest request any more
    ],
)
def test_runway_without_an_answer(d: kpb.KeyDetail, spent: int, reason: str) -> None:
    r = runway(d, spent, NOW)
    assert (r.event, r.at_ms, r.in_days, r.reason) == (None, None, None, reason)


def test_rows_of_events() -> None:
    e = usage_event("r", "p1", "k1", customer_id="c1", customer_charged_uai=5, cents="1.50", time_ms=0)
    row = ingest.row_of(e, "usage.p1.k1", fallback_time_ms=123)
    assert (row["ai_credit_cents"], row["time_ms"], row["source"], row["outcome"]) == ("1.5", 123, "reported", "ok")
    assert ingest.normalize_cents("2.000") == "2" and ingest.normalize_cents("1E+1") == "10"
    assert (
        ingest.normalize_cents("nan") == "" and ingest.normalize_cents("-1") == "" and ingest.normalize_cents("x") == ""
    )
    with pytest.raises(ingest.Invalid):
        ingest.row_of(e, "usage.p2.k1", 0)
    with pytest.raises(ingest.Invalid):
        ingest.row_of(usage_event("r", charged_ucr=-1), None, 0)


def test_hourly_sums_group_by_hour_and_price() -> None:
    h = 7 * HOUR_MS
    rows = [
        ingest.row_of(usage_event("a", customer_id="c", customer_charged_uai=10, cents="1", time_ms=h + 1), None, 0),
        ingest.row_of(usage_event("b", customer_id="c", customer_charged_uai=20, cents="1", time_ms=h + 2), None, 0),
        ingest.row_of(usage_event("c", customer_id="c", customer_charged_uai=30, cents="2", time_ms=h + 3), None, 0),
        ingest.row_of(
            usage_event("d", customer_id="c", customer_charged_uai=40, cents="1", time_ms=h + HOUR_MS), None, 0
        ),
    ]
    sums = ingest.hourly_sums(rows)
    assert {(g[1], g[5]): s["customer_charged_uai"] for g, s in sums.items()} == {
        (h, "1"): 30,
        (h, "2"): 30,
        (h + HOUR_MS, "1"): 40,
    }
