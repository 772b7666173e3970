"""Golden prices: the ledger's arithmetic, to the micro-credit."""

import decimal
import time
from decimal import Decimal

import pytest

from cg_ledger.limits import MAX_AMOUNT
from cglib.pricing import (
    CustomerBilling,
    parse_price,
    platform_fee_ucr,
    provider_cost_ucr,
    quote,
    round_up_ucr,
    usd_to_ucr,
)

D = Decimal


@pytest.mark.parametrize(
    "model, in_price, out_price, input_tokens, output_tokens, expected_ucr",
    [
        # 1 token at p USD/1M = p * 100 ucr
        ("gpt-4o-mini", "0.15", "0.60", 1000, 500, 15_000 + 30_000),
        ("gpt-4o", "2.50", "10.00", 1_000_000, 1_000_000, 1_250_000_000),  # $12.50 = 1250 credits
        ("claude-haiku-4-5", "1.00", "5.00", 7, 16, 700 + 8_000),
        ("gemini-2.5-flash", "0.30", "2.50", 123_456, 789, 3_703_680 + 197_250),
        ("mistral-small-latest", "0.10", "0.30", 1, 1, 10 + 30),
        ("llama-3.3-70b-versatile", "0.59", "0.79", 3, 0, 177),
        # rounding up, once per charge: 7.5 -> 8 ; 3 * 3.75 = 11.25 -> 12 ; 0.3+0.3 = 0.6 -> 1
        ("half", "0.075", "0", 1, 0, 8),
        ("quarter", "0.0375", "0", 3, 0, 12),
        ("tiny", "0.003", "0.003", 1, 1, 1),
        ("free", "0", "0", 10_000, 10_000, 0),
    ],
)
def test_golden_prices(model, in_price, out_price, input_tokens, output_tokens, expected_ucr):
    assert provider_cost_ucr(input_tokens, output_tokens, D(in_price), D(out_price)) == expected_ucr


def test_rounding_is_once_per_charge_not_per_side():
    # 1 token at 0.003 on each side is 0.3 + 0.3 = 0.6 ucr -> 1, not ceil(0.3) + ceil(0.3) = 2.
    assert provider_cost_ucr(1, 1, D("0.003"), D("0.003")) == 1


def test_huge_counts_stay_exact():
    cost = provider_cost_ucr(10**12, 10**12, D("0.15"), D("0.60"))
    assert cost == 10**12 * 15 + 10**12 * 60
    assert cost < MAX_AMOUNT
    # the largest token counts at $10,000 per 1M tokens: far above one amount, still exact
    assert provider_cost_ucr(10**12, 10**12, D("10000"), D("10000")) == 2 * 10**12 * 10**6


@pytest.mark.parametrize("price", ["1e999980", "1e41", "9" * 39])
def test_a_huge_price_fails_at_once_instead_of_building_a_giant_integer(price):
    # 1e999980 once took ~40 s of CPU in int(); the context now stops at 10^41
    start = time.process_time()
    with pytest.raises(decimal.Overflow):
        provider_cost_ucr(10**12, 10**12, D(price), D("1"))
    with pytest.raises(decimal.Overflow):
        round_up_ucr(D(price) * 10**6)
    assert time.process_time() - start < 0.5


def test_unit_helpers():
    assert round_up_ucr(D("0.000001")) == 1
    assert round_up_ucr(D("5")) == 5
    assert usd_to_ucr(D("1")) == 100_000_000
    assert usd_to_ucr(D("0.01")) == 1_000_000  # one cent is one credit


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "abc", ""])
def test_bad_prices_are_refused(raw):
    with pytest.raises(ValueError):
        parse_price(raw, "price")


def test_negative_tokens_are_refused():
    with pytest.raises(ValueError):
        provider_cost_ucr(-1, 0, D("1"), D("1"))


def test_customer_price_multiplier_floor_and_ai_credits():
    # gpt-4o-mini, 1000 in + 500 out: provider $0.00045 = 45,000 ucr
    billing = CustomerBilling(D("1.5"), D("2"))  # x1.5, 1 AI credit = 2 cents
    q = quote(1000, 500, D("0.15"), D("0.60"), billing)
    assert q.provider_cost_ucr == 45_000
    assert q.customer_price_ucr == 67_500  # $0.000675
    assert q.customer_price_uai == 33_750  # 0.03375 AI credits at $0.02
    assert q.partner_margin_ucr == 22_500
    # a floor of $0.50 per 1M tokens on 1,500 tokens is $0.00075, above the markup
    floored = quote(1000, 500, D("0.15"), D("0.60"), CustomerBilling(D("1.5"), D("2"), D("0.50")))
    assert (floored.customer_price_ucr, floored.customer_price_uai, floored.partner_margin_ucr) == (
        75_000,
        37_500,
        30_000,
    )
    # AI credits round up once: $0.000001 at 3 cents per AI credit = 33.33.. uai -> 34
    tiny = quote(0, 1, D("0"), D("1"), CustomerBilling(D("1"), D("3")))
    assert tiny.customer_price_uai == 34
    assert quote(1, 1, D("1"), D("1"), None).customer_price_uai == 0


@pytest.mark.parametrize(
    "multiplier, cents, floor",
    [("0", "1", "0"), ("-1", "1", "0"), ("1", "0", "0"), ("1", "1", "-0.5"), ("nan", "1", "0")],
)
def test_bad_customer_terms_are_refused(multiplier, cents, floor):
    with pytest.raises(ValueError):
        CustomerBilling(D(multiplier), D(cents), D(floor))


def test_platform_fee():
    assert platform_fee_ucr(100_000_000, D("0.05")) == 5_000_000
    assert platform_fee_ucr(1, D("0.05")) == 1  # rounded up
    assert platform_fee_ucr(123, D("0")) == 0
    for bad in ("-0.1", "1.5"):
        with pytest.raises(ValueError):
            platform_fee_ucr(100, D(bad))
