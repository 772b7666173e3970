"""The model catalog, loaded once from a versioned YAML file."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml


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
class Catalog:
    version: str
    models: dict[str, CatalogModel]

    def get(self, model_id: str) -> CatalogModel | None:
        return self.models.get(model_id)


def _price(raw: object, where: str) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation as e:
        raise ValueError(f"{where}: not a decimal price: {raw!r}") from e
    if value < 0 or not value.is_finite():
        raise ValueError(f"{where}: price must be a non-negative number")
    return value


def load_catalog(path: Path) -> Catalog:
    data = yaml.safe_load(Path(path).read_text())
    models: dict[str, CatalogModel] = {}
    for entry in data["models"]:
        mid = entry["id"]
        if mid in models:
            raise ValueError(f"catalog: duplicate model id {mid!r}")
        models[mid] = CatalogModel(
            id=mid,
            provider=entry["provider"],
            upstream_model=entry["upstream_model"],
            category=entry["category"],
            input_usd_per_mtok=_price(entry["input_usd_per_mtok"], f"{mid}.input_usd_per_mtok"),
            output_usd_per_mtok=_price(entry["output_usd_per_mtok"], f"{mid}.output_usd_per_mtok"),
            context_window=int(entry["context_window"]),
            max_output_tokens=int(entry["max_output_tokens"]),
        )
    return Catalog(version=str(data["version"]), models=models)
