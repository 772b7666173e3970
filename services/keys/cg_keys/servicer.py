"""gRPC servicer: translates proto <-> the keys domain. Nothing is decided here: the
rules live in the modules it calls, and ``ERROR_CODES`` says which status code each of
the domain's errors is (applied by ``cglib.grpc_errors``'s interceptor)."""

from __future__ import annotations

import logging
import time

import grpc

from cg_keys.billing import LedgerTerms, effective_terms
from cg_keys.catalog import Catalog, CatalogModel
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
from cg_keys.money import KeyMoney
from cg_keys.reads import KeyRead, KeyReads
from cg_keys.tenants import Tenants
from cg_keys.transitions import effective_status, suspension_from_pb, suspension_pb
from cg_keys.visibility import missing
from cglib.grpc_errors import ErrorCodes
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.keys.v1 import keys_pb2_grpc

log = logging.getLogger(__name__)

ERROR_CODES: ErrorCodes = {
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


_PARTNER_STATE = {"active": pb.PARTNER_STATUS_ACTIVE, "suspended": pb.PARTNER_STATUS_SUSPENDED}


def partner_pb(p: Partner, catalog: Catalog | None = None) -> pb.Partner:
    tier = catalog.tier(p.tier) if catalog is not None else None
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
        fee_rate=str(tier.fee_rate) if tier is not None else "",
        created_at_unix=p.created_at,
        state=_PARTNER_STATE.get(p.status, pb.PARTNER_STATUS_UNSPECIFIED),
    )


def customer_pb(c: Customer, partner: Partner) -> pb.Customer:
    hidden_by = missing(partner, c)
    return pb.Customer(
        id=c.id,
        partner_id=c.partner_id,
        name=c.name,
        ai_credits_enabled=c.ai_credits_enabled,
        ai_gateway_visible=not hidden_by,
        api_access_enabled=c.api_access_enabled,
        ai_gateway_menu_enabled=c.ai_gateway_menu_enabled,
        ai_gateway_missing=hidden_by,
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
        suspension=suspension_pb(k.suspension),
    )


def read_pb(read: KeyRead, partner: Partner, now: float | None = None) -> pb.Key:
    """``key_pb``, with what a partner key has spent and has left."""
    out = key_pb(read.key, partner, now)
    if read.spend is not None:
        out.spent_ucr, out.remaining_ucr = read.spend.spent_ucr, read.spend.remaining_ucr
    return out


def _created_pb(c: Created) -> pb.CreateKeyResponse:
    return pb.CreateKeyResponse(
        key=key_pb(c.key, c.partner), secret=c.secret, total_ucr=c.total_ucr, fee_ucr=c.fee_ucr, replayed=c.replayed
    )


def _model_pb(m: CatalogModel) -> pb.CatalogModel:
    return pb.CatalogModel(
        id=m.id,
        provider=m.provider,
        category=m.category,
        input_usd_per_mtok=str(m.input_usd_per_mtok),
        output_usd_per_mtok=str(m.output_usd_per_mtok),
        context_window=m.context_window,
    )


def _route_pb(m: CatalogModel, price_book_version: str) -> pb.ModelRoute:
    return pb.ModelRoute(
        id=m.id,
        provider=m.provider,
        upstream_model=m.upstream_model,
        category=m.category,
        input_usd_per_mtok=str(m.input_usd_per_mtok),
        output_usd_per_mtok=str(m.output_usd_per_mtok),
        context_window=m.context_window,
        max_output_tokens=m.max_output_tokens,
        price_book_version=price_book_version,
    )


def _ledger_billing_pb(t: LedgerTerms) -> pb.LedgerBilling:
    out = pb.LedgerBilling(payer_account=t.payer_account)
    if t.customer is not None:
        out.customer_account, out.revenue_account = t.customer_account, t.revenue_account
        out.profit_multiplier = t.customer.profit_multiplier
        out.price_per_ai_credit_cents = t.customer.price_per_ai_credit_cents
        out.floor_usd_per_mtok = t.customer.floor_usd_per_mtok
    return out


class KeysServicer(keys_pb2_grpc.KeysServiceServicer):
    def __init__(
        self, tenants: Tenants, issuer: KeyIssuer, keys: KeyOps, money: KeyMoney, reads: KeyReads, catalog: Catalog
    ) -> None:
        self.tenants = tenants
        self.issuer = issuer
        self.keys = keys
        self.money = money
        self.reads = reads
        self.catalog = catalog

    # -- tenants ---------------------------------------------------------------------

    async def CreatePartner(self, request: pb.CreatePartnerRequest, context: grpc.aio.ServicerContext) -> pb.Partner:
        partner = await self.tenants.create_partner(request.name, request.tier, request.external_ref)
        return partner_pb(partner, self.catalog)

    async def GetPartner(self, request: pb.GetPartnerRequest, context: grpc.aio.ServicerContext) -> pb.Partner:
        return partner_pb(await self.tenants.get_partner(request.actor), self.catalog)

    async def ListPartners(
        self, request: pb.ListPartnersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPartnersResponse:
        partners, token = await self.tenants.list_partners(request)
        return pb.ListPartnersResponse(partners=[partner_pb(p, self.catalog) for p in partners], next_page_token=token)

    async def UpdatePartner(self, request: pb.UpdatePartnerRequest, context: grpc.aio.ServicerContext) -> pb.Partner:
        return partner_pb(await self.tenants.update_partner(request), self.catalog)

    async def UpdateSelfService(
        self, request: pb.UpdateSelfServiceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Partner:
        return partner_pb(
            await self.tenants.update_self_service(
                request.actor, request.settings, request.apply_to_existing_customers
            ),
            self.catalog,
        )

    async def CreateCustomer(self, request: pb.CreateCustomerRequest, context: grpc.aio.ServicerContext) -> pb.Customer:
        return customer_pb(*await self.tenants.create_customer(request.actor, request))

    async def UpdateCustomer(self, request: pb.UpdateCustomerRequest, context: grpc.aio.ServicerContext) -> pb.Customer:
        return customer_pb(*await self.tenants.update_customer(request.actor, request))

    async def GetCustomer(self, request: pb.GetCustomerRequest, context: grpc.aio.ServicerContext) -> pb.Customer:
        return customer_pb(*await self.tenants.get_customer(request.actor, request.customer_id))

    async def ListCustomers(
        self, request: pb.ListCustomersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCustomersResponse:
        customers, partner = await self.tenants.list_customers(request.actor)
        return pb.ListCustomersResponse(customers=[customer_pb(c, partner) for c in customers])

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        # no actor at all: the whole catalog, every tier's models (the operators' read-only view)
        actor = request.actor
        tier = (await self.tenants.get_partner(actor)).tier if actor.partner_id or actor.customer_id else ""
        return pb.ListModelsResponse(
            tier=tier,
            catalog_version=self.catalog.version,
            categories=[
                pb.ModelCategory(category=c, models=[_model_pb(m) for m in ms])
                for c, ms in self.catalog.by_category(tier or None).items()
            ],
        )

    # -- keys ------------------------------------------------------------------------

    async def QuoteKey(self, request: pb.QuoteKeyRequest, context: grpc.aio.ServicerContext) -> pb.QuoteKeyResponse:
        quote, rate = await self.issuer.quote(request.actor, request.budget_credits)
        return pb.QuoteKeyResponse(
            budget_ucr=quote.budget_ucr, fee_ucr=quote.fee_ucr, total_ucr=quote.total_ucr, fee_rate=rate
        )

    async def CreateKey(self, request: pb.CreateKeyRequest, context: grpc.aio.ServicerContext) -> pb.CreateKeyResponse:
        return _created_pb(
            await self.issuer.create_partner_key(
                request.actor, request.idempotency_key, request.fields, request.budget_credits
            )
        )

    async def CreateCustomerKey(
        self, request: pb.CreateCustomerKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateKeyResponse:
        return _created_pb(
            await self.issuer.create_customer_key(
                request.actor, request.idempotency_key, request.name, request.description, list(request.allowed_models)
            )
        )

    async def GetKey(self, request: pb.GetKeyRequest, context: grpc.aio.ServicerContext) -> pb.KeyDetail:
        read, partner = await self.reads.get(request.actor, request.key_id)
        detail = pb.KeyDetail(key=read_pb(read, partner), min_request_ucr=read.min_request_ucr)
        if (spent := read.spend) is not None:
            detail.reserved_ucr, detail.used_ucr = spent.reserved_ucr, spent.spent_ucr
            detail.remaining_ucr, detail.settled_remaining_ucr = spent.remaining_ucr, spent.settled_remaining_ucr
        return detail

    async def ListKeys(self, request: pb.ListKeysRequest, context: grpc.aio.ServicerContext) -> pb.ListKeysResponse:
        now = time.time()
        reads, partner = await self.reads.list(request.actor, request.include_revoked)
        return pb.ListKeysResponse(keys=[read_pb(r, partner, now) for r in reads])

    async def UpdateKey(self, request: pb.UpdateKeyRequest, context: grpc.aio.ServicerContext) -> pb.Key:
        return key_pb(*await self.keys.update(request.actor, request.key_id, request.fields, list(request.update_mask)))

    async def RegenerateKey(
        self, request: pb.RegenerateKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateKeyResponse:
        return _created_pb(await self.issuer.regenerate(request.actor, request.key_id, request.idempotency_key))

    async def RevokeKey(self, request: pb.RevokeKeyRequest, context: grpc.aio.ServicerContext) -> pb.Key:
        return key_pb(*await self.keys.revoke(request.actor, request.key_id))

    async def SuspendKey(self, request: pb.SuspendKeyRequest, context: grpc.aio.ServicerContext) -> pb.Key:
        suspension = suspension_from_pb(request.suspension, "suspension")
        return key_pb(*await self.keys.suspend(request.actor, request.key_id, suspension, request.note))

    async def ResumeKey(self, request: pb.ResumeKeyRequest, context: grpc.aio.ServicerContext) -> pb.Key:
        only_if = suspension_from_pb(request.only_if, "only_if")
        return key_pb(*await self.keys.resume(request.actor, request.key_id, only_if))

    async def TopUpKey(self, request: pb.TopUpKeyRequest, context: grpc.aio.ServicerContext) -> pb.TopUpKeyResponse:
        out = await self.money.top_up(
            request.actor, request.key_id, request.idempotency_key, request.amount_credits, request.automatic
        )
        return pb.TopUpKeyResponse(
            key=key_pb(out.key, out.partner),
            amount_ucr=out.funded.budget_ucr,
            fee_ucr=out.funded.fee_ucr,
            replayed=out.replayed,
        )

    async def MarkKeyExhausted(self, request: pb.MarkKeyExhaustedRequest, context: grpc.aio.ServicerContext) -> pb.Key:
        return key_pb(*await self.keys.mark_exhausted(request.actor, request.key_id))

    async def AuthenticateKey(
        self, request: pb.AuthenticateKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateKeyResponse:
        found = await self.reads.authenticate(request.key_hash)
        return pb.AuthenticateKeyResponse(
            key=key_pb(found.key, found.partner),
            models=[_route_pb(m, self.catalog.version) for m in found.models],
            billing=_ledger_billing_pb(found.billing),
            partner_status=found.partner.status,
            partner_state=_PARTNER_STATE.get(found.partner.status, pb.PARTNER_STATUS_UNSPECIFIED),
        )
