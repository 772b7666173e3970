"""Partners, customers and the partner's customer self-service settings.

Customer reads return the customer with its partner: whether the customer sees AI
Gateway depends on the partner's self-service switch too (``visibility``)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys import access, validation
from cg_keys.catalog import Catalog
from cg_keys.errors import InvalidArgument
from cg_keys.models import Customer, Partner
from cglib.ids import new_id
from creditgate.keys.v1 import keys_pb2


class Tenants:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], catalog: Catalog) -> None:
        self.sessions = sessions
        self.catalog = catalog

    async def create_partner(self, name: str, tier: str, external_ref: str) -> Partner:
        name = validation.name(name)
        tier = tier or "starter"
        if self.catalog.tier(tier) is None:
            raise InvalidArgument("tier", f"one of {', '.join(sorted(self.catalog.tiers))}")
        if len(external_ref) > 200:
            raise InvalidArgument("external_ref", "at most 200 characters")
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
            customer = access.visible_customer(acting, await session.get(Customer, request.customer_id))
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
            return access.visible_customer(acting, await session.get(Customer, customer_id)), acting.partner

    async def list_customers(self, actor: keys_pb2.Actor) -> tuple[list[Customer], Partner]:
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
            rows = await session.exec(
                select(Customer).where(Customer.partner_id == acting.partner.id).order_by(col(Customer.created_at))
            )
            return list(rows.all()), acting.partner
