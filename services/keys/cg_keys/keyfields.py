"""The fields of a key a tenant sets (at create and update), validated against the
catalog, the partner's tier and its customers before anything is written."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys import access, validation
from cg_keys.catalog import Catalog
from cg_keys.errors import InvalidArgument
from cg_keys.models import Customer, Partner, VirtualKey
from creditgate.keys.v1 import keys_pb2

EDITABLE = (
    "name",
    "description",
    "allowed_models",
    "billing",
    "auto_topup",
    "allowed_domains",
    "rpm_limit",
    "tpm_limit",
    "expires_at_unix",
)
CUSTOMER_EDITABLE = ("name", "description", "allowed_models")


def allowed_models(catalog: Catalog, partner: Partner, models: Iterable[str]) -> list[str]:
    models = list(models)
    if not models:
        raise InvalidArgument("allowed_models", "at least one model")
    if len(models) > validation.MAX_MODELS:
        raise InvalidArgument("allowed_models", f"at most {validation.MAX_MODELS}")
    for i, model in enumerate(models):
        if catalog.get(model) is None:
            raise InvalidArgument(f"allowed_models[{i}]", f"{model[:100]!r} is not in the catalog")
        if not catalog.allowed(partner.tier, model):
            raise InvalidArgument(f"allowed_models[{i}]", f"{model!r} is not in the {partner.tier} tier")
    return list(dict.fromkeys(models))


async def apply(
    session: AsyncSession,
    catalog: Catalog,
    acting: access.Acting,
    key: VirtualKey,
    fields: keys_pb2.KeyFields,
    names: Iterable[str],
) -> None:
    """Validates and sets the named fields of ``fields`` on ``key``."""
    names = set(names)
    if "name" in names:
        key.name = validation.name(fields.name)
    if "description" in names:
        key.description = validation.description(fields.description)
    if "allowed_models" in names:
        key.allowed_models = allowed_models(catalog, acting.partner, fields.allowed_models)
    if "allowed_domains" in names:
        key.allowed_domains = validation.domains(list(fields.allowed_domains))
    if "rpm_limit" in names:
        key.rpm_limit = validation.rate(fields.rpm_limit, "rpm_limit")
    if "tpm_limit" in names:
        key.tpm_limit = validation.rate(fields.tpm_limit, "tpm_limit")
    if "expires_at_unix" in names:
        key.expires_at = validation.expiry(fields.expires_at_unix, int(time.time()))
    if "billing" in names:
        b = fields.billing
        if b.customer_id:
            customer = await access.lookup(session, Customer, b.customer_id)
            if customer is None or customer.partner_id != acting.partner.id:
                raise InvalidArgument("billing.customer_id", "not one of your customers")
            key.billing_customer_id = customer.id
            key.profit_multiplier = validation.decimal(b.profit_multiplier, "billing.profit_multiplier", positive=True)
            key.price_per_ai_credit_cents = validation.decimal(
                b.price_per_ai_credit_cents, "billing.price_per_ai_credit_cents", positive=True
            )
            key.floor_usd_per_mtok = validation.decimal(
                b.floor_usd_per_mtok, "billing.floor_usd_per_mtok", optional=True
            )
        else:
            key.billing_customer_id = None
            key.profit_multiplier = key.price_per_ai_credit_cents = key.floor_usd_per_mtok = ""
    if "auto_topup" in names:
        t = fields.auto_topup
        key.auto_topup_enabled = t.enabled
        if t.enabled:
            key.auto_topup_threshold_usd = validation.decimal(t.threshold_usd, "auto_topup.threshold_usd")
            key.auto_topup_amount_usd = validation.decimal(t.amount_usd, "auto_topup.amount_usd", positive=True)
        else:
            key.auto_topup_threshold_usd = key.auto_topup_amount_usd = ""
