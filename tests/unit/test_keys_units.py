from pathlib import Path

import pytest

from cg_keys import budget, visibility
from cg_keys.billing import effective_terms
from cg_keys.catalog import load_catalog
from cg_keys.models import Customer, Partner, VirtualKey
from cg_keys.settings import Settings
from cglib.keysecret import PREFIX, display_prefix, hash_secret, looks_like_key, new_secret
from creditgate.ledger.v1 import ledger_pb2


def test_secret_format_and_hash():
    s = new_secret()
    assert s.startswith(PREFIX) and len(s) == len(PREFIX) + 40 and s[len(PREFIX) :].isalnum()
    assert looks_like_key(s)
    assert hash_secret(s) == hash_secret(s) and len(hash_secret(s)) == 64
    assert hash_secret(s) != hash_secret(new_secret())
    assert display_prefix(s) == s[:12]


@pytest.mark.parametrize("bad", ["", "sk-cg-short", "sk-xx-" + "a" * 40, "sk-cg-" + "a" * 39 + "!"])
def test_not_keys(bad):
    assert not looks_like_key(bad)


def test_shipped_catalog_loads_with_exact_prices():
    catalog = load_catalog(Settings().catalog_path)
    assert catalog.version
    mini = catalog.get("gpt-4o-mini")
    assert mini is not None and str(mini.input_usd_per_mtok) == "0.15" and str(mini.output_usd_per_mtok) == "0.60"
    assert {m.provider for m in catalog.models.values()} >= {"openai", "anthropic", "google", "mistral"}


def test_catalog_refuses_duplicates_and_bad_prices(tmp_path: Path):
    dup = tmp_path / "dup.yaml"
    entry = (
        "  - {id: m, provider: p, upstream_model: m, category: budget, input_usd_per_mtok: '%s',"
        " output_usd_per_mtok: '1', context_window: 1, max_output_tokens: 1}\n"
    )
    dup.write_text("version: '1'\nmodels:\n" + entry % "1" + entry % "1")
    with pytest.raises(ValueError, match="duplicate"):
        load_catalog(dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: '1'\nmodels:\n" + entry % "-2")
    with pytest.raises(ValueError, match="non-negative"):
        load_catalog(bad)


# -- budget: exhaustion by the cheapest request, spend with closed accounts -------------

CATALOG = load_catalog(Settings().catalog_path)


@pytest.mark.parametrize(
    ("tier", "models", "ucr"),
    [
        ("enterprise", ["gpt-4o-mini"], 75),  # ($0.15 + $0.60) per 1M tokens -> 0.75 x 100 ucr
        ("enterprise", ["gpt-4o"], 1_250),  # $2.50 + $10.00
        ("enterprise", ["gpt-4o", "claude-haiku-4-5", "gpt-4o-mini"], 75),  # the cheapest of them
        ("starter", ["gpt-4o", "gpt-4o-mini"], 75),  # gpt-4o is not the starter tier's: it cannot be called
        ("starter", ["gpt-4o"], 0),  # nothing it can call: nothing to afford
        ("enterprise", ["no-such-model"], 0),
    ],
)
def test_min_request_is_one_token_in_and_out_on_the_cheapest_callable_model(tier, models, ucr):
    assert budget.min_request_ucr(CATALOG, tier, models) == ucr


def test_min_request_rounds_up_like_the_ledger(tmp_path: Path):
    priced = tmp_path / "c.yaml"
    priced.write_text(
        "version: '1'\nmodels:\n  - {id: m, provider: p, upstream_model: m, category: budget,"
        " input_usd_per_mtok: '0.001', output_usd_per_mtok: '0.0002', context_window: 1,"
        " max_output_tokens: 1}\ntiers: {t: {categories: [budget], fee_rate: '0'}}\n"
    )
    assert budget.min_request_ucr(load_catalog(priced), "t", ["m"]) == 1  # 0.12 ucr -> 1
    assert not budget.is_exhausted(75, 75) and budget.is_exhausted(74, 75)


def _key(**kw) -> VirtualKey:
    return VirtualKey(
        id="key_1", partner_id="ptn_1", name="k", key_hash="h", prefix="p", budget_account="key:key_1", **kw
    )


def test_spend_counts_the_ledgers_refunds_once_the_account_is_closed():
    key = _key(funded_ucr=100, refunded_ucr=87, status="revoked")
    # revoked with 10 in flight: the ledger's closing refund is 87 so far
    closed = ledger_pb2.Balance(
        posted_ucr=10, pending_ucr=10, available_ucr=0, closed_to="partner:ptn_1", refunded_ucr=87
    )
    assert budget.spend(key, closed) == budget.Spend(
        spent_ucr=3, reserved_ucr=10, remaining_ucr=0, settled_remaining_ucr=10
    )
    # the hold settled at 4: its 6 of rest went to the partner, not into the account
    settled = ledger_pb2.Balance(posted_ucr=0, closed_to="partner:ptn_1", refunded_ucr=93)
    assert budget.spend(key, settled).spent_ucr == 7
    # a ledger that does not report the account closed: keys' record of the refund
    assert budget.spend(key, ledger_pb2.Balance(posted_ucr=6, available_ucr=6)).spent_ucr == 7


def test_visibility_names_every_missing_condition():
    p = Partner(id="ptn_1", name="P", tier="growth", ss_enabled=False)
    c = Customer(id="cus_1", partner_id="ptn_1", name="C")
    assert visibility.missing(p, c) == ["self_service_disabled", "ai_credits_disabled", "ai_gateway_menu_disabled"]
    p.ss_enabled, c.ai_credits_enabled, c.ai_gateway_menu_enabled = True, True, True
    assert visibility.missing(p, c) == []


def test_a_customer_created_key_is_billed_at_the_partners_current_terms():
    p = Partner(id="ptn_1", name="P", tier="growth", ss_profit_multiplier="3", ss_ai_credit_cents="0.5")
    own = _key(
        kind="customer",
        owner_customer_id="cus_1",
        billing_customer_id="cus_1",
        profit_multiplier="9",
        price_per_ai_credit_cents="9",
        floor_usd_per_mtok="9",
    )
    t = effective_terms(own, p)  # not what the row holds: the partner's settings now, no floor
    assert (t.customer_id, t.profit_multiplier, t.price_per_ai_credit_cents, t.floor_usd_per_mtok) == (
        "cus_1",
        "3",
        "0.5",
        "",
    )
    billed = _key(
        billing_customer_id="cus_1", profit_multiplier="2", price_per_ai_credit_cents="1", floor_usd_per_mtok="4"
    )
    t = effective_terms(billed, p)
    assert (t.customer_id, t.profit_multiplier, t.price_per_ai_credit_cents, t.floor_usd_per_mtok) == (
        "cus_1",
        "2",
        "1",
        "4",
    )
    assert effective_terms(_key(), p) is None
