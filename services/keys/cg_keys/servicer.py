"""gRPC servicer: translates proto <-> the keys domain and ``KeysError`` -> status codes."""

from __future__ import annotations

import logging
import time

import grpc

from cg_keys import budget, visibility
from cg_keys.billing import effective_terms
from cg_keys.catalog import CATEGORIES, Catalog
from cg_keys.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from cg_keys.issuing import Created, KeyIssuer
from cg_keys.keyops import KeyOps
from cg_keys.models import Customer, Partner, VirtualKey
from cg_keys.tenants import Tenants
from cg_keys.transitions import effective_status
from cglib.grpc_server import mapped_errors
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.keys.v1 import keys_pb2_grpc

log = logging.getLogger(__name__)

_CODES = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}
_STATUS = {
    "active": pb.KEY_STATUS_ACTIVE,
    "suspended": pb.KEY_STATUS_SUSPENDED,
    "exhausted": pb.KEY_STATUS_EXHAUSTED,
    "expired": pb.KEY_STATUS_EXPIRED,
    "revoked": pb.KEY_STATUS_REVOKED,
}


_mapped_errors = mapped_errors(_CODES)


def partner_pb(p: Partner) -> pb.Partner:
    return pb.Partner(
        id=p.id,
        name=p.name,
        tier=p.tier,
        external_ref=p.external_ref or "",
        status=p.status,
        self_service=pb.SelfServiceSettings(
            enabled=p.ss_enabled,
            apply_to_new_customers=p.ss_apply_to_new,
            default_profit_multiplier=p.ss_profit_multiplier,
            ai_credit_price_cents=p.ss_ai_credit_cents,
        ),
    )


def customer_pb(c: Customer, partner: Partner) -> pb.Customer:
    missing = visibility.missing(partner, c)
    return pb.Customer(
        id=c.id,
        partner_id=c.partner_id,
        name=c.name,
        ai_credits_enabled=c.ai_credits_enabled,
        ai_gateway_visible=not missing,
        api_access_enabled=c.api_access_enabled,
        ai_gateway_menu_enabled=c.ai_gateway_menu_enabled,
        ai_gateway_missing=missing,
    )


def key_pb(k: VirtualKey, partner: Partner, now: float | None = None) -> pb.Key:
    """A key as a tenant reads it: its effective status and the billing terms that apply
    (``billing.effective_terms``)."""
    billing = None
    if (terms := effective_terms(k, partner)) is not None:
        billing = pb.CustomerBilling(
            customer_id=terms.customer_id,
            profit_multiplier=terms.profit_multiplier,
            price_per_ai_credit_cents=terms.price_per_ai_credit_cents,
            floor_usd_per_mtok=terms.floor_usd_per_mtok,
        )
    return pb.Key(
        id=k.id,
        partner_id=k.partner_id,
        name=k.name,
        prefix=k.prefix,
        status=_STATUS.get(effective_status(k, now), pb.KEY_STATUS_UNSPECIFIED),
        allowed_models=list(k.allowed_models),
        budget_account=k.budget_account,
        created_at_unix=k.created_at,
        description=k.description,
        kind=k.kind,
        owner_customer_id=k.owner_customer_id or "",
        billing=billing,
        auto_topup=pb.AutoTopUp(
            enabled=k.auto_topup_enabled,
            threshold_usd=k.auto_topup_threshold_usd,
            amount_usd=k.auto_topup_amount_usd,
            last_error=k.auto_topup_error,
            last_error_unix=k.auto_topup_error_at,
        ),
        allowed_domains=list(k.allowed_domains),
        rpm_limit=k.rpm_limit,
        tpm_limit=k.tpm_limit,
        expires_at_unix=k.expires_at,
        funded_ucr=k.funded_ucr,
        last_used_unix=k.last_used_at,
        status_reason=k.status_reason,
    )


def with_spend(out: pb.Key, k: VirtualKey, balance) -> pb.Key:
    """Budget vs spend of a partner key, from its ledger balance (``budget.spend``)."""
    if balance is not None and k.kind == "partner":
        spent = budget.spend(k, balance)
        out.spent_ucr, out.remaining_ucr = spent.spent_ucr, spent.remaining_ucr
    return out


def _created_pb(c: Created) -> pb.CreateKeyResponse:
    return pb.CreateKeyResponse(
        key=key_pb(c.key, c.partner), secret=c.secret, total_ucr=c.total_ucr, fee_ucr=c.fee_ucr, replayed=c.replayed
    )


class KeysServicer(keys_pb2_grpc.KeysServiceServicer):
    def __init__(self, tenants: Tenants, issuer: KeyIssuer, keys: KeyOps, catalog: Catalog) -> None:
        self.tenants = tenants
        self.issuer = issuer
        self.keys = keys
        self.catalog = catalog

    # -- tenants ---------------------------------------------------------------------

    @_mapped_errors
    async def CreatePartner(self, request, context):
        return partner_pb(await self.tenants.create_partner(request.name, request.tier, request.external_ref))

    @_mapped_errors
    async def GetPartner(self, request, context):
        return partner_pb(await self.tenants.get_partner(request.actor))

    @_mapped_errors
    async def UpdateSelfService(self, request, context):
        return partner_pb(
            await self.tenants.update_self_service(request.actor, request.settings, request.apply_to_existing_customers)
        )

    @_mapped_errors
    async def CreateCustomer(self, request, context):
        return customer_pb(*await self.tenants.create_customer(request.actor, request))

    @_mapped_errors
    async def UpdateCustomer(self, request, context):
        return customer_pb(*await self.tenants.update_customer(request.actor, request))

    @_mapped_errors
    async def GetCustomer(self, request, context):
        return customer_pb(*await self.tenants.get_customer(request.actor, request.customer_id))

    @_mapped_errors
    async def ListCustomers(self, request, context):
        customers, partner = await self.tenants.list_customers(request.actor)
        return pb.ListCustomersResponse(customers=[customer_pb(c, partner) for c in customers])

    @_mapped_errors
    async def ListModels(self, request, context):
        partner = await self.tenants.get_partner(request.actor)
        by_category: dict[str, list] = {c: [] for c in CATEGORIES}
        for m in self.catalog.models_for_tier(partner.tier):
            by_category[m.category].append(
                pb.CatalogModel(
                    id=m.id,
                    provider=m.provider,
                    category=m.category,
                    input_usd_per_mtok=str(m.input_usd_per_mtok),
                    output_usd_per_mtok=str(m.output_usd_per_mtok),
                    context_window=m.context_window,
                )
            )
        return pb.ListModelsResponse(
            tier=partner.tier,
            catalog_version=self.catalog.version,
            categories=[pb.ModelCategory(category=c, models=ms) for c, ms in by_category.items() if ms],
        )

    # -- keys ------------------------------------------------------------------------

    @_mapped_errors
    async def QuoteKey(self, request, context):
        quote, rate = await self.issuer.quote(request.actor, request.budget_credits)
        return pb.QuoteKeyResponse(
            budget_ucr=quote.budget_ucr, fee_ucr=quote.fee_ucr, total_ucr=quote.total_ucr, fee_rate=rate
        )

    @_mapped_errors
    async def CreateKey(self, request, context):
        return _created_pb(
            await self.issuer.create_partner_key(
                request.actor, request.idempotency_key, request.fields, request.budget_credits
            )
        )

    @_mapped_errors
    async def CreateCustomerKey(self, request, context):
        return _created_pb(
            await self.issuer.create_customer_key(
                request.actor, request.idempotency_key, request.name, request.description, list(request.allowed_models)
            )
        )

    @_mapped_errors
    async def GetKey(self, request, context):
        key, partner, balance = await self.keys.get(request.actor, request.key_id)
        detail = pb.KeyDetail(
            key=with_spend(key_pb(key, partner), key, balance), min_request_ucr=self.keys.min_request_ucr(key, partner)
        )
        if balance is not None:
            spent = budget.spend(key, balance)
            detail.reserved_ucr, detail.used_ucr = spent.reserved_ucr, spent.spent_ucr
            detail.remaining_ucr, detail.settled_remaining_ucr = spent.remaining_ucr, spent.settled_remaining_ucr
        return detail

    @_mapped_errors
    async def ListKeys(self, request, context):
        now = time.time()
        partner, keys = await self.keys.list(request.actor, request.include_revoked)
        return pb.ListKeysResponse(keys=[with_spend(key_pb(k, partner, now), k, balance) for k, balance in keys])

    @_mapped_errors
    async def UpdateKey(self, request, context):
        return key_pb(*await self.keys.update(request.actor, request.key_id, request.fields, list(request.update_mask)))

    @_mapped_errors
    async def RegenerateKey(self, request, context):
        return _created_pb(await self.issuer.regenerate(request.actor, request.key_id, request.idempotency_key))

    @_mapped_errors
    async def RevokeKey(self, request, context):
        return key_pb(*await self.keys.revoke(request.actor, request.key_id))

    @_mapped_errors
    async def SuspendKey(self, request, context):
        return key_pb(*await self.keys.suspend(request.actor, request.key_id, request.reason))

    @_mapped_errors
    async def ResumeKey(self, request, context):
        return key_pb(*await self.keys.resume(request.actor, request.key_id, request.only_if_reason))

    @_mapped_errors
    async def TopUpKey(self, request, context):
        key, partner, funded, replayed = await self.keys.top_up(
            request.actor, request.key_id, request.idempotency_key, request.amount_credits, request.automatic
        )
        return pb.TopUpKeyResponse(
            key=key_pb(key, partner), amount_ucr=funded.budget_ucr, fee_ucr=funded.fee_ucr, replayed=replayed
        )

    @_mapped_errors
    async def MarkKeyExhausted(self, request, context):
        return key_pb(*await self.keys.mark_exhausted(request.actor, request.key_id))

    @_mapped_errors
    async def AuthenticateKey(self, request, context):
        if len(request.key_hash) != 64:
            raise InvalidArgument("key_hash", "expected 64 hex characters")
        key, partner = await self.keys.authenticate(request.key_hash)
        routes = [
            pb.ModelRoute(
                id=m.id,
                provider=m.provider,
                upstream_model=m.upstream_model,
                category=m.category,
                input_usd_per_mtok=str(m.input_usd_per_mtok),
                output_usd_per_mtok=str(m.output_usd_per_mtok),
                context_window=m.context_window,
                max_output_tokens=m.max_output_tokens,
                price_book_version=self.catalog.version,
            )
            for m in self.catalog.usable(partner.tier, key.allowed_models)
        ]
        billing = pb.LedgerBilling(payer_account=key.budget_account)
        if (terms := effective_terms(key, partner)) is not None:  # the very terms reads show
            billing.customer_account = f"customer:{terms.customer_id}"
            billing.revenue_account = f"partnerrev:{key.partner_id}"
            billing.profit_multiplier = terms.profit_multiplier
            billing.price_per_ai_credit_cents = terms.price_per_ai_credit_cents
            billing.floor_usd_per_mtok = terms.floor_usd_per_mtok
        return pb.AuthenticateKeyResponse(
            key=key_pb(key, partner), models=routes, billing=billing, partner_status=partner.status
        )
