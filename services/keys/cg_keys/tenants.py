"""Partners, customers and the partner's customer self-service settings.

Customer reads return the customer with its partner: whether the customer sees AI
Gateway depends on the partner's self-service switch too (``visibility``).

Operators (the platform admin, through the BFF) list partners and change a partner's
tier or status (``update_partner``). A suspended partner's keys are all refused by the
proxy (``AuthenticateKeyResponse.partner_state``); so that no proxy keeps serving one
from its cache, a status change publishes a ``KeyChanged`` (UPDATED) for each of the
partner's keys that is not revoked.
"""

from __future__ import annotations

import base64
import binascii

from sqlalchemy import func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys import access, validation
from cg_keys.catalog import Catalog
from cg_keys.errors import InvalidArgument, NotFound
from cg_keys.events import KeyEvents
from cg_keys.models import Customer, Partner, VirtualKey
from cglib.ids import new_id
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2

# Partner.status, by the proto's PartnerStatus
PARTNER_STATUS = {keys_pb2.PARTNER_STATUS_ACTIVE: "active", keys_pb2.PARTNER_STATUS_SUSPENDED: "suspended"}
MAX_PARTNER_PAGE = 500
DEFAULT_PARTNER_PAGE = 50


def _page_token(p: Partner) -> str:
    return base64.urlsafe_b64encode(f"{p.created_at}.{p.id}".encode()).decode()


def _after(token: str) -> tuple[int, str] | None:
    """The (created_at, id) a page token continues after; INVALID_ARGUMENT if it is not ours."""
    if not token:
        return None
    try:
        created, _, pid = base64.urlsafe_b64decode(token.encode()).decode().partition(".")
        if not pid or len(pid) > 64 or not pid.isprintable() or not created.isdigit() or len(created) > 18:
            raise ValueError(token)
        return int(created), pid
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidArgument("page_token", "not a token from this API") from None


class Tenants:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], catalog: Catalog, events: KeyEvents | None = None
    ) -> None:
        self.sessions = sessions
        self.catalog = catalog
        self.events = events

    async def create_partner(self, name: str, tier: str, external_ref: str) -> Partner:
        name = validation.name(name)
        tier = tier or "starter"
        if self.catalog.tier(tier) is None:
            raise InvalidArgument("tier", f"one of {', '.join(sorted(self.catalog.tiers))}")
        external_ref = validation.external_ref(external_ref)
        async with self.sessions() as session:
            if external_ref:
                existing = (await session.exec(select(Partner).where(Partner.external_ref == external_ref))).first()
                if existing:
                    return existing
            partner = Partner(id=new_id("ptn"), name=name, tier=tier, external_ref=external_ref or None)
            session.add(partner)
            try:
                await session.commit()
            except IntegrityError:  # a concurrent create with the same external_ref won
                await session.rollback()
                existing = (await session.exec(select(Partner).where(Partner.external_ref == external_ref))).first()
                if existing is None:
                    raise
                return existing
            return partner

    async def get_partner(self, actor: keys_pb2.Actor) -> Partner:
        async with self.sessions() as session:
            return (await access.resolve(session, actor)).partner

    # -- operators -------------------------------------------------------------------

    async def list_partners(self, request: keys_pb2.ListPartnersRequest) -> tuple[list[Partner], str]:
        """A page of partners, oldest first, and the token of the next page ("" at the end)."""
        if not 0 <= request.page_size <= MAX_PARTNER_PAGE:
            raise InvalidArgument("page_size", f"between 1 and {MAX_PARTNER_PAGE} (0: {DEFAULT_PARTNER_PAGE})")
        if len(request.name_contains) > validation.MAX_NAME or not request.name_contains.isprintable():
            raise InvalidArgument("name_contains", f"at most {validation.MAX_NAME} printable characters")
        if request.state and request.state not in PARTNER_STATUS:
            raise InvalidArgument("state", "not a PartnerStatus")
        size = request.page_size or DEFAULT_PARTNER_PAGE
        q = select(Partner)
        if (after := _after(request.page_token)) is not None:
            created, pid = after
            q = q.where(
                or_(col(Partner.created_at) > created, (col(Partner.created_at) == created) & (col(Partner.id) > pid))
            )
        if request.state:
            q = q.where(Partner.status == PARTNER_STATUS[request.state])
        if needle := request.name_contains.strip().lower():
            q = q.where(func.lower(col(Partner.name)).contains(needle, autoescape=True))
        q = q.order_by(col(Partner.created_at), col(Partner.id)).limit(size + 1)
        async with self.sessions() as session:
            rows = list((await session.exec(q)).all())
        more = len(rows) > size
        rows = rows[:size]
        return rows, (_page_token(rows[-1]) if more else "")

    async def update_partner(self, request: keys_pb2.UpdatePartnerRequest) -> Partner:
        """Changes a partner's tier, name or status (unset fields stay). A status change
        drops the partner's keys from every proxy's cache (see the module docstring)."""
        tier = request.tier if request.HasField("tier") else None
        if tier is not None and self.catalog.tier(tier) is None:
            raise InvalidArgument("tier", f"one of {', '.join(sorted(self.catalog.tiers))}")
        name = validation.name(request.name) if request.HasField("name") else None
        if request.state and request.state not in PARTNER_STATUS:
            raise InvalidArgument("state", "not a PartnerStatus")
        status = PARTNER_STATUS.get(request.state)
        async with self.sessions() as session:
            pid = request.partner_id
            # an id that cannot be one (PostgreSQL refuses NUL in text) is simply no partner
            partner = await session.get(Partner, pid, with_for_update=True) if access.could_be_id(pid) else None
            if partner is None:
                raise NotFound("partner not found")
            status_changed = status is not None and partner.status != status
            tier_changed = tier is not None and partner.tier != tier
            if tier is not None:
                partner.tier = tier
            if name is not None:
                partner.name = name
            if status is not None:
                partner.status = status
            session.add(partner)
            await session.commit()
            await session.refresh(partner)
            keys: list[VirtualKey] = []
            if status_changed or tier_changed:  # both change what the partner's keys may do
                rows = await session.exec(
                    select(VirtualKey).where(
                        VirtualKey.partner_id == partner.id, col(VirtualKey.status).not_in(("revoked", "failed"))
                    )
                )
                keys = list(rows.all())
        if self.events is not None:
            for key in keys:
                await self.events.publish(key, events_pb2.KEY_CHANGE_UPDATED)
        return partner

    async def update_self_service(
        self, actor: keys_pb2.Actor, settings: keys_pb2.SelfServiceSettings, apply_to_existing: bool
    ) -> Partner:
        multiplier = validation.decimal(
            settings.default_profit_multiplier, "settings.default_profit_multiplier", positive=True
        )
        cents = validation.decimal(settings.ai_credit_price_cents, "settings.ai_credit_price_cents", positive=True)
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
            partner = acting.partner
            partner.ss_enabled = settings.enabled
            partner.ss_apply_to_new = settings.apply_to_new_customers
            partner.ss_profit_multiplier = multiplier
            partner.ss_ai_credit_cents = cents
            session.add(partner)
            if apply_to_existing:
                # one statement: every existing customer's AI Gateway menu toggle on (whether
                # each then sees it also depends on its AI credits: see visibility)
                await session.exec(
                    update(Customer).where(col(Customer.partner_id) == partner.id).values(ai_gateway_menu_enabled=True)
                )
            await session.commit()
            await session.refresh(partner)
            return partner

    async def create_customer(
        self, actor: keys_pb2.Actor, request: keys_pb2.CreateCustomerRequest
    ) -> tuple[Customer, Partner]:
        """With an idempotency key, a retry returns the customer the first call made."""
        name = validation.name(request.name)
        idem = validation.idempotency_key(request.idempotency_key, required=False) or None
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
            partner = acting.partner
            if idem and (existing := await self._by_idempotency(session, partner.id, idem)) is not None:
                return existing, partner
            menu = (
                request.ai_gateway_menu_enabled
                if request.HasField("ai_gateway_menu_enabled")
                else partner.ss_apply_to_new
            )
            customer = Customer(
                id=new_id("cus"),
                partner_id=partner.id,
                name=name,
                ai_credits_enabled=request.ai_credits_enabled,
                ai_gateway_menu_enabled=menu,
                api_access_enabled=request.api_access_enabled,
                idempotency_key=idem,
            )
            session.add(customer)
            try:
                await session.commit()
            except IntegrityError:  # the same idempotency key, concurrently
                await session.rollback()
                existing = await self._by_idempotency(session, partner.id, idem) if idem else None
                if existing is None:
                    raise
                return existing, partner
            return customer, partner

    @staticmethod
    async def _by_idempotency(session: AsyncSession, partner_id: str, idem: str) -> Customer | None:
        return (
            await session.exec(
                select(Customer).where(Customer.partner_id == partner_id, Customer.idempotency_key == idem)
            )
        ).first()

    async def update_customer(
        self, actor: keys_pb2.Actor, request: keys_pb2.UpdateCustomerRequest
    ) -> tuple[Customer, Partner]:
        new_name = validation.name(request.name) if request.HasField("name") else None
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
            customer = access.visible_customer(acting, await access.lookup(session, Customer, request.customer_id))
            for field in ("ai_credits_enabled", "ai_gateway_menu_enabled", "api_access_enabled"):
                if request.HasField(field):
                    setattr(customer, field, getattr(request, field))
            if new_name is not None:
                customer.name = new_name
            session.add(customer)
            await session.commit()
            return customer, acting.partner

    async def get_customer(self, actor: keys_pb2.Actor, customer_id: str) -> tuple[Customer, Partner]:
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            return access.visible_customer(acting, await access.lookup(session, Customer, customer_id)), acting.partner

    async def list_customers(self, actor: keys_pb2.Actor) -> tuple[list[Customer], Partner]:
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
            rows = await session.exec(
                select(Customer).where(Customer.partner_id == acting.partner.id).order_by(col(Customer.created_at))
            )
            return list(rows.all()), acting.partner
