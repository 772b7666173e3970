"""Who may touch what. Every call resolves its ``Actor`` here first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys.errors import NotFound, PermissionDenied
from cg_keys.models import Customer, Partner, VirtualKey
from creditgate.keys.v1 import keys_pb2


@dataclass(frozen=True)
class Acting:
    partner: Partner
    customer: Customer | None

    @property
    def is_partner(self) -> bool:
        return self.customer is None


ActingOn = tuple[Acting, VirtualKey]  # the acting tenant and the key it acts on


M = TypeVar("M")


def could_be_id(value: str) -> bool:
    """Whether a caller's string could be one of our ids: at most 64 printable characters.
    Anything else (PostgreSQL refuses NUL in text, so it would fail as a query) is simply
    not found, like an id that does not exist."""
    return 0 < len(value) <= 64 and value.isprintable()


async def lookup(session: AsyncSession, model: type[M], value: str, *, lock: bool = False) -> M | None:
    """The row with this caller-given id, or None (also for a string that cannot be an id)."""
    if not could_be_id(value):
        return None
    return await session.get(model, value, with_for_update=lock)


async def resolve(session: AsyncSession, actor: keys_pb2.Actor) -> Acting:
    """The actor's partner (and customer), or NOT_FOUND when they do not exist or the
    customer is not the partner's."""
    if not actor.partner_id:
        raise PermissionDenied("actor.partner_id: required")
    partner = await lookup(session, Partner, actor.partner_id)
    if partner is None:
        raise NotFound("partner not found")
    customer = None
    if actor.customer_id:
        customer = await lookup(session, Customer, actor.customer_id)
        if customer is None or customer.partner_id != partner.id:
            raise NotFound("customer not found")
    return Acting(partner, customer)


def require_partner(acting: Acting) -> None:
    if not acting.is_partner:
        raise PermissionDenied("only the partner may do this")


def visible_key(acting: Acting, key: VirtualKey | None) -> VirtualKey:
    """A key the actor may see: the partner's own, or the customer's own."""
    if key is None or key.partner_id != acting.partner.id or key.status in ("provisioning", "failed"):
        raise NotFound("key not found")
    if acting.customer is not None and acting.customer.id not in (key.owner_customer_id, key.billing_customer_id):
        raise NotFound("key not found")
    return key


def changeable_key(acting: Acting, key: VirtualKey | None) -> VirtualKey:
    """A key the actor may change: any of the partner's; a customer only its own."""
    key = visible_key(acting, key)
    if acting.customer is not None and key.owner_customer_id != acting.customer.id:
        raise PermissionDenied("a customer may only change the keys it created")
    return key


def visible_customer(acting: Acting, customer: Customer | None) -> Customer:
    if customer is None or customer.partner_id != acting.partner.id:
        raise NotFound("customer not found")
    if acting.customer is not None and acting.customer.id != customer.id:
        raise NotFound("customer not found")
    return customer
