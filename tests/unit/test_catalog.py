"""The versioned model catalog and subscription tiers of the keys service."""

import re
from decimal import Decimal
from pathlib import Path

import pytest

from cg_keys.catalog import CATEGORIES, Catalog, CatalogModel, Tier, load_catalog
from cg_keys.settings import Settings


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return load_catalog(Settings().catalog_path)


# --- the shipped catalog --------------------------------------------------------------


def test_shipped_catalog_loads(shipped: Catalog):
    assert shipped.version == "2026-11-27.2"
    assert 18 <= len(shipped.models) <= 25
    for m in shipped.models.values():
        assert isinstance(m, CatalogModel)
        assert isinstance(m.input_usd_per_mtok, Decimal) and isinstance(m.output_usd_per_mtok, Decimal)
        assert m.context_window > 0 and 0 < m.max_output_tokens <= m.context_window


def test_shipped_catalog_covers_providers_and_categories(shipped: Catalog):
    providers = {m.provider for m in shipped.models.values()}
    assert providers >= {"openai", "anthropic", "google", "mistral", "deepseek"}
    assert providers <= {"openai", "anthropic", "google", "groq", "together", "mistral", "deepseek"}
    assert any(m.provider in {"groq", "together"} and "llama" in m.id for m in shipped.models.values())
    assert {m.category for m in shipped.models.values()} == set(CATEGORIES)


@pytest.mark.parametrize(
    ("model_id", "provider", "category", "price_in", "price_out"),
    [
        ("gpt-4o-mini", "openai", "budget", "0.15", "0.60"),
        ("gpt-4o", "openai", "premium", "2.50", "10.00"),
        ("claude-haiku-4-5", "anthropic", "mid", "1.00", "5.00"),
        ("gemini-2.5-flash", "google", "budget", "0.30", "2.50"),
        ("llama-3.3-70b-versatile", "groq", "mid", "0.59", "0.79"),
        ("mistral-small-latest", "mistral", "budget", "0.10", "0.30"),
    ],
)
def test_shipped_catalog_keeps_pinned_prices(shipped, model_id, provider, category, price_in, price_out):
    m = shipped.get(model_id)
    assert m is not None and m.provider == provider and m.category == category
    assert str(m.input_usd_per_mtok) == price_in and str(m.output_usd_per_mtok) == price_out


def test_shipped_pinned_limits(shipped: Catalog):
    mini, haiku = shipped.get("gpt-4o-mini"), shipped.get("claude-haiku-4-5")
    assert (mini.context_window, mini.max_output_tokens) == (128000, 16384)
    assert (haiku.context_window, haiku.max_output_tokens) == (200000, 64000)


def test_shipped_tiers(shipped: Catalog):
    assert len(shipped.tiers) >= 3
    assert shipped.tier("starter") == Tier("starter", ("budget",), Decimal("0.10"))
    assert shipped.tier("growth") == Tier("growth", ("budget", "mid"), Decimal("0.05"))
    assert shipped.tier("enterprise") == Tier("enterprise", ("budget", "mid", "premium"), Decimal("0.02"))
    assert shipped.tier("nope") is None


# --- tier restrictions ----------------------------------------------------------------


def test_starter_sees_only_budget_models(shipped: Catalog):
    starter = shipped.models_for_tier("starter")
    assert starter and {m.category for m in starter} == {"budget"}
    assert {m.id for m in starter} == {m.id for m in shipped.models.values() if m.category == "budget"}
    assert shipped.allowed("starter", "gpt-4o-mini")
    assert not shipped.allowed("starter", "claude-haiku-4-5")
    assert not shipped.allowed("starter", "gpt-4o")


def test_growth_sees_budget_and_mid(shipped: Catalog):
    assert {m.category for m in shipped.models_for_tier("growth")} == {"budget", "mid"}
    assert shipped.allowed("growth", "claude-haiku-4-5")
    assert not shipped.allowed("growth", "gpt-4o")


def test_enterprise_sees_everything_in_category_then_id_order(shipped: Catalog):
    models = shipped.models_for_tier("enterprise")
    assert {m.id for m in models} == set(shipped.models)
    assert models == sorted(models, key=lambda m: (CATEGORIES.index(m.category), m.id))
    assert all(shipped.allowed("enterprise", mid) for mid in shipped.models)


def test_unknown_tier_or_model_is_not_allowed(shipped: Catalog):
    assert shipped.models_for_tier("platinum") == []
    assert not shipped.allowed("platinum", "gpt-4o-mini")
    assert not shipped.allowed("enterprise", "no-such-model")


# --- validation -----------------------------------------------------------------------

GOOD_MODEL = {
    "id": "m1",
    "provider": "openai",
    "upstream_model": "m1",
    "category": "budget",
    "input_usd_per_mtok": '"0.10"',
    "output_usd_per_mtok": '"0.40"',
    "context_window": "1000",
    "max_output_tokens": "100",
}
GOOD_TIERS = """tiers:
  starter: {categories: [budget], fee_rate: "0.10"}
  enterprise: {categories: [budget, mid, premium], fee_rate: "0.02"}
"""


def _model_yaml(**overrides: str) -> str:
    fields = {**GOOD_MODEL, **overrides}
    return "  - {" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}\n"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "catalog.yaml"
    p.write_text(text)
    return p


def _catalog(models: str, tiers: str = GOOD_TIERS, version: str = 'version: "t.1"\n') -> str:
    return version + "models:\n" + models + tiers


def test_minimal_good_catalog_loads(tmp_path: Path):
    cat = load_catalog(_write(tmp_path, _catalog(_model_yaml() + _model_yaml(id="m2", category="premium"))))
    assert cat.version == "t.1"
    assert cat.get("m1").input_usd_per_mtok == Decimal("0.10")
    assert [m.id for m in cat.models_for_tier("starter")] == ["m1"]
    assert [m.id for m in cat.models_for_tier("enterprise")] == ["m1", "m2"]


def test_tiers_are_optional(tmp_path: Path):
    assert load_catalog(_write(tmp_path, _catalog(_model_yaml(), tiers=""))).tiers == {}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (_catalog(_model_yaml(category="luxury")), "unknown category 'luxury'"),
        (_catalog(_model_yaml() + _model_yaml()), "duplicate model id 'm1'"),
        (_catalog(_model_yaml(input_usd_per_mtok='"-0.10"')), "m1.input_usd_per_mtok: must be a non-negative"),
        (_catalog(_model_yaml(output_usd_per_mtok='"cheap"')), "m1.output_usd_per_mtok: not a decimal"),
        (_catalog(_model_yaml(output_usd_per_mtok='"NaN"')), "m1.output_usd_per_mtok: must be a non-negative"),
        (_catalog(_model_yaml(input_usd_per_mtok="0.10")), "m1.input_usd_per_mtok: 0.1 was read as a float"),
        (_catalog(_model_yaml(output_usd_per_mtok="2")), "m1.output_usd_per_mtok: must be a quoted decimal"),
        (_catalog(_model_yaml(context_window="0")), "m1.context_window: must be a positive integer"),
        (_catalog(_model_yaml(max_output_tokens="-5")), "m1.max_output_tokens: must be a positive integer"),
        (_catalog(_model_yaml(context_window='"1000"')), "m1.context_window: must be a positive integer"),
        (
            _catalog(_model_yaml(), tiers='tiers:\n  t: {categories: [budget], fee_rate: "1.5"}\n'),
            "tier 't'.fee_rate: must be between 0 and 1",
        ),
        (
            _catalog(_model_yaml(), tiers='tiers:\n  t: {categories: [budget], fee_rate: "-0.01"}\n'),
            "tier 't'.fee_rate: must be between 0 and 1",
        ),
        (
            _catalog(_model_yaml(), tiers="tiers:\n  t: {categories: [budget], fee_rate: 0.05}\n"),
            "tier 't'.fee_rate: 0.05 was read as a float",
        ),
        (
            _catalog(_model_yaml(), tiers='tiers:\n  t: {categories: [budget, gold], fee_rate: "0.05"}\n'),
            "tier 't'.categories: unknown category 'gold'",
        ),
        (
            _catalog(_model_yaml(), tiers='tiers:\n  t: {categories: [], fee_rate: "0.05"}\n'),
            "tier 't'.categories: must be a non-empty list",
        ),
        (_catalog(_model_yaml(), version=""), "missing version"),
        (_catalog(_model_yaml(), version='version: ""\n'), "missing version"),
        (_catalog(_model_yaml().replace(", max_output_tokens: 100", "")), "missing field"),
        (_catalog(_model_yaml(cached_usd_per_mtok='"0.01"')), "unknown field"),
        (_catalog(_model_yaml(id="m" * 121)), "at most 120 characters"),
        (_catalog(_model_yaml(), version=f'version: "{"v" * 61}"\n'), "version: at most 60 characters"),
        (_catalog(_model_yaml(input_usd_per_mtok='"0.' + "1" * 45 + '"')), "at most 40 characters as a decimal"),
    ],
    ids=[
        "unknown-category",
        "duplicate-id",
        "negative-price",
        "non-decimal-price",
        "nan-price",
        "float-price",
        "unquoted-int-price",
        "zero-context",
        "negative-max-output",
        "string-context",
        "fee-rate-above-1",
        "fee-rate-negative",
        "float-fee-rate",
        "tier-unknown-category",
        "tier-no-categories",
        "no-version",
        "empty-version",
        "missing-field",
        "unknown-field",
        "model-id-longer-than-the-ledger-stores",
        "version-longer-than-the-ledger-stores",
        "price-longer-than-the-ledger-stores",
    ],
)
def test_validation_errors(tmp_path: Path, text: str, match: str):
    with pytest.raises(ValueError, match=re.escape(match)):
        load_catalog(_write(tmp_path, text))
