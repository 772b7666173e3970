"""The model catalog, loaded once from a versioned YAML file (``catalog.yaml``).

It holds the models partners' keys may route to, with their list prices in USD per
1M tokens as exact ``Decimal``s, and the subscription tiers: which model categories a
tier may use and the platform fee rate charged when a key is funded.

``load_catalog`` validates everything up front and raises ``ValueError`` naming the
offending entry, so a bad price book stops the service at start-up rather than
mispricing requests. Money values must be quoted strings in the YAML: a number YAML
parsed as a float is refused, because floats must never touch money.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

from cg_keys.errors import FailedPrecondition

# Cheapest first; also the order ``models_for_tier`` sorts by.
CATEGORIES: tuple[str, ...] = ("budget", "mid", "premium")

_MODEL_FIELDS = (
    "id",
    "provider",
    "upstream_model",
    "category",
    "input_usd_per_mtok",
    "output_usd_per_mtok",
    "context_window",
    "max_output_tokens",
)
_TIER_FIELDS = ("categories", "fee_rate")


@dataclass(frozen=True)
class CatalogModel:
    id: str
    provider: str
    upstream_model: str
    category: str
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    context_window: int
    max_output_tokens: int


@dataclass(frozen=True)
class Tier:
    """A subscription tier: the model categories it may use and its funding fee rate."""

    name: str
    categories: tuple[str, ...]
    fee_rate: Decimal  # fraction of a key's budget taken as platform fee, 0..1


@dataclass(frozen=True)
class Catalog:
    version: str
    models: dict[str, CatalogModel]
    tiers: dict[str, Tier] = field(default_factory=dict)

    def get(self, model_id: str) -> CatalogModel | None:
        return self.models.get(model_id)

    def tier(self, name: str) -> Tier | None:
        return self.tiers.get(name)

    def fee_rate(self, tier_name: str) -> Decimal:
        """A tier's funding fee rate; a tier gone from the catalog is FAILED_PRECONDITION."""
        t = self.tier(tier_name)
        if t is None:
            raise FailedPrecondition(f"the partner's tier {tier_name!r} is not in the catalog")
        return t.fee_rate

    def models_for_tier(self, tier_name: str) -> list[CatalogModel]:
        """The models a tier may use, by category (budget, mid, premium) then id.
        An unknown tier may use nothing."""
        t = self.tier(tier_name)
        if t is None:
            return []
        allowed = [m for m in self.models.values() if m.category in t.categories]
        return sorted(allowed, key=lambda m: (CATEGORIES.index(m.category), m.id))

    def by_category(self, tier_name: str | None) -> dict[str, list[CatalogModel]]:
        """``models_for_tier`` grouped by category, in category order; empty ones left out.
        No tier (None): every model of the catalog."""
        groups: dict[str, list[CatalogModel]] = {c: [] for c in CATEGORIES}
        every = sorted(self.models.values(), key=lambda m: (CATEGORIES.index(m.category), m.id))
        for m in every if tier_name is None else self.models_for_tier(tier_name):
            groups[m.category].append(m)
        return {c: ms for c, ms in groups.items() if ms}

    def allowed(self, tier_name: str, model_id: str) -> bool:
        """Whether a partner on ``tier_name`` may use ``model_id`` (False if either is unknown)."""
        t, m = self.tier(tier_name), self.get(model_id)
        return t is not None and m is not None and m.category in t.categories

    def usable(self, tier_name: str, model_ids: Iterable[str]) -> list[CatalogModel]:
        """Of a key's allowed models, those a partner on ``tier_name`` can call now, in the
        key's order: one gone from the catalog or from the tier since is left out."""
        return [self.models[m] for m in model_ids if self.allowed(tier_name, m)]


def _decimal(raw: object, where: str, *, at_most: Decimal | None = None) -> Decimal:
    """An exact, finite, non-negative decimal (at most ``at_most``) from a quoted YAML string."""
    if isinstance(raw, float):
        raise ValueError(f'{where}: {raw!r} was read as a float; quote it ("{raw}") so it stays an exact decimal')
    if not isinstance(raw, str):
        raise ValueError(f"{where}: must be a quoted decimal string, got {type(raw).__name__} {raw!r}")
    try:
        value = Decimal(raw.strip())
    except InvalidOperation as e:
        raise ValueError(f"{where}: not a decimal number: {raw!r}") from e
    if not value.is_finite() or value < 0 or (at_most is not None and value > at_most):
        bound = "a non-negative number" if at_most is None else f"between 0 and {at_most}"
        raise ValueError(f"{where}: must be {bound}, got {raw!r}")
    if len(str(value)) > MAX_PRICE_CHARS:
        raise ValueError(f"{where}: at most {MAX_PRICE_CHARS} characters as a decimal, got {raw!r}")
    return value


def _positive_int(raw: object, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise ValueError(f"{where}: must be a positive integer, got {raw!r}")
    return raw


# The ledger stores a request's model, prices and price-book version with each hold and
# refuses longer strings (cg_ledger.limits): a catalog entry past these would make every
# request of that model fail, so it stops the service at start-up instead.
MAX_MODEL_ID = 120
MAX_VERSION = 60
MAX_PRICE_CHARS = 40


def _text(raw: object, where: str, max_len: int = 200) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{where}: must be a non-empty string, got {raw!r}")
    if len(raw) > max_len:
        raise ValueError(f"{where}: at most {max_len} characters, got {len(raw)}")
    return raw


def _fields(entry: object, names: tuple[str, ...], where: str) -> dict:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a mapping")
    missing = [n for n in names if n not in entry]
    unknown = [str(k) for k in entry if k not in names]
    if missing:
        raise ValueError(f"{where}: missing field(s): {', '.join(missing)}")
    if unknown:
        raise ValueError(f"{where}: unknown field(s): {', '.join(unknown)}")
    return entry


def _model(entry: object, index: int) -> CatalogModel:
    where = f"catalog: models[{index}]"
    entry = _fields(entry, _MODEL_FIELDS, where)
    mid = _text(entry["id"], f"{where}.id", MAX_MODEL_ID)
    where = f"catalog: model {mid!r}"
    category = entry["category"]
    if category not in CATEGORIES:
        raise ValueError(f"{where}: unknown category {category!r} (expected one of {', '.join(CATEGORIES)})")
    return CatalogModel(
        id=mid,
        provider=_text(entry["provider"], f"{where}.provider"),
        upstream_model=_text(entry["upstream_model"], f"{where}.upstream_model"),
        category=category,
        input_usd_per_mtok=_decimal(entry["input_usd_per_mtok"], f"{mid}.input_usd_per_mtok"),
        output_usd_per_mtok=_decimal(entry["output_usd_per_mtok"], f"{mid}.output_usd_per_mtok"),
        context_window=_positive_int(entry["context_window"], f"{mid}.context_window"),
        max_output_tokens=_positive_int(entry["max_output_tokens"], f"{mid}.max_output_tokens"),
    )


def _tier(name: object, entry: object) -> Tier:
    where = f"catalog: tier {name!r}"
    name = _text(name, where)
    entry = _fields(entry, _TIER_FIELDS, where)
    cats = entry["categories"]
    if not isinstance(cats, list) or not cats:
        raise ValueError(f"{where}.categories: must be a non-empty list")
    for c in cats:
        if c not in CATEGORIES:
            raise ValueError(f"{where}.categories: unknown category {c!r} (expected one of {', '.join(CATEGORIES)})")
    fee_rate = _decimal(entry["fee_rate"], f"{where}.fee_rate", at_most=Decimal(1))
    return Tier(name=name, categories=tuple(dict.fromkeys(cats)), fee_rate=fee_rate)


def load_catalog(path: Path) -> Catalog:
    """Loads and validates the catalog; raises ``ValueError`` on anything it would misprice."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError("catalog: expected a mapping with version, models and tiers")
    version = data.get("version")
    if version is None or not str(version).strip():
        raise ValueError("catalog: missing version (bump it whenever a price changes)")
    if len(str(version).strip()) > MAX_VERSION:
        raise ValueError(f"catalog: version: at most {MAX_VERSION} characters")
    raw_models = data.get("models")
    if not isinstance(raw_models, list):
        raise ValueError("catalog: models must be a list")
    models: dict[str, CatalogModel] = {}
    for i, entry in enumerate(raw_models):
        m = _model(entry, i)
        if m.id in models:
            raise ValueError(f"catalog: duplicate model id {m.id!r}")
        models[m.id] = m
    raw_tiers = data.get("tiers") or {}
    if not isinstance(raw_tiers, dict):
        raise ValueError("catalog: tiers must be a mapping of tier name to tier")
    tiers = {t.name: t for t in (_tier(name, entry) for name, entry in raw_tiers.items())}
    return Catalog(version=str(version).strip(), models=models, tiers=tiers)
