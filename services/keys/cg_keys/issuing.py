"""Making keys and their secrets, exactly once per idempotency key.

Every call here takes the caller's idempotency key (required: without one a retry
cannot be told from a second call, which would make a second key, a second funding,
or kill the secret the first answer carried). A retry converges on the first outcome
and a secret is shown once:

1. **create** (partner key or customer key): the key row is written first as
   ``provisioning`` (it cannot authenticate and is in no list), then the ledger funds
   it (or holds the deposit) under an idempotency id derived from the key id, then the
   row turns ``active`` with the secret of the call that activates it. A retry finds
   the row by its idempotency key and repeats the (idempotent) ledger call. Whether it
   may answer a secret is decided under the row's lock: only a row still
   ``provisioning`` (the first call never finished, so nobody saw a secret) is
   activated with the retry's fresh secret; a row past it answers ``replayed`` with
   no secret, and the first secret keeps working. A refused funding marks the row
   ``failed``, so no key exists unfunded and no credits leave for a key that doesn't;
   a retry then gets the same refusal.
2. **regenerate**: the rotation is recorded in ``key_rotations`` under (key, idempotency
   key) in the same transaction as the new hash; a retry finds the record and answers
   ``replayed`` with no secret, rotating nothing.

The reconciler activates ``provisioning`` rows nobody retried (``finish_provisioning``);
their secret is never shown, so their owner regenerates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys import access, keyfields, transitions, validation, visibility
from cg_keys.catalog import Catalog
from cg_keys.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from cg_keys.events import KeyEvents
from cg_keys.funding import UCR_PER_CREDIT, Funding
from cg_keys.models import KeyFunding, KeyRotation, Partner, VirtualKey
from cglib.faults import crash_point
from cglib.ids import new_id
from cglib.keysecret import display_prefix, hash_secret, new_secret

log = logging.getLogger(__name__)

DEPOSIT_UCR = 1_000 * UCR_PER_CREDIT


@dataclass
class Created:
    key: VirtualKey
    partner: Partner
    secret: str  # "" when replayed
    total_ucr: int
    fee_ucr: int
    replayed: bool = False


class KeyIssuer:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], catalog: Catalog, funding: Funding, events: KeyEvents
    ) -> None:
        self.sessions = sessions
        self.catalog = catalog
        self.funding = funding
        self.events = events

    async def quote(self, actor, budget_credits: int):
        budget = validation.credits(budget_credits, "budget_credits") * UCR_PER_CREDIT
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
        tier = self.catalog.tier(acting.partner.tier)
        return await self.funding.quote(budget, str(tier.fee_rate)), str(tier.fee_rate)

    # -- create ----------------------------------------------------------------------

    async def create_partner_key(self, actor, idempotency_key: str, fields, budget_credits: int) -> Created:
        budget = validation.credits(budget_credits, "budget_credits") * UCR_PER_CREDIT
        idem = "p:" + validation.idempotency_key(idempotency_key)
        secret = new_secret()
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
            key = await self._by_idempotency(session, acting.partner.id, idem)
            if key is None:
                key_id = new_id("key")
                key = VirtualKey(
                    id=key_id,
                    partner_id=acting.partner.id,
                    name="",
                    key_hash=hash_secret(secret),
                    prefix=display_prefix(secret),
                    budget_account=f"key:{key_id}",
                    kind="partner",
                    idempotency_key=idem,
                )
                await keyfields.apply(session, self.catalog, acting, key, fields, keyfields.EDITABLE)
                key = await self._insert(session, key, acting.partner.id, idem)
            partner = acting.partner
        self._check_reusable(key, "partner")
        tier = self.catalog.tier(partner.tier)
        funding_id = f"fund:{key.id}:create"
        try:
            funded = await self.funding.fund(funding_id, partner.id, key.id, budget, str(tier.fee_rate))
        except FailedPrecondition:
            await transitions.set_status(self.sessions, key.id, "failed", "funding refused")
            raise
        crash_point("create:after_funding")
        key, secret = await self._activate(key.id, funding_id, funded.budget_ucr, funded.fee_ucr, secret)
        if secret:
            await self.events.publish(key, "created")
        return Created(key, partner, secret, funded.total_ucr, funded.fee_ucr, replayed=not secret)

    async def create_customer_key(
        self, actor, idempotency_key: str, name: str, description: str, models: list[str]
    ) -> Created:
        idem = validation.idempotency_key(idempotency_key)
        secret = new_secret()
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            if acting.customer is None:
                raise PermissionDenied("customer keys are created by a customer")
            partner, customer = acting.partner, acting.customer
            idem = f"c:{customer.id}:{idem}"  # each owner has its own idempotency keys
            key = await self._by_idempotency(session, partner.id, idem)
            if key is None:  # a retry converges on the first outcome even if a switch changed since
                missing = visibility.missing(partner, customer)
                if missing:
                    raise FailedPrecondition(visibility.REFUSALS[missing[0]])
                key_id = new_id("key")
                key = VirtualKey(
                    id=key_id,
                    partner_id=partner.id,
                    name=validation.name(name),
                    description=validation.description(description),
                    key_hash=hash_secret(secret),
                    prefix=display_prefix(secret),
                    budget_account=f"partner:{partner.id}",
                    kind="customer",
                    owner_customer_id=customer.id,
                    billing_customer_id=customer.id,
                    allowed_models=keyfields.allowed_models(self.catalog, partner, models),
                    idempotency_key=idem,
                )
                key = await self._insert(session, key, partner.id, idem)
        self._check_reusable(key, "customer")
        try:
            await self.funding.hold_deposit(f"deposit:{key.id}", partner.id, key.id, DEPOSIT_UCR)
        except FailedPrecondition:
            await transitions.set_status(self.sessions, key.id, "failed", "deposit refused")
            raise
        key, secret = await self._activate(key.id, None, 0, 0, secret)
        if secret:
            await self.events.publish(key, "created")
        return Created(key, partner, secret, DEPOSIT_UCR, 0, replayed=not secret)

    @staticmethod
    def _check_reusable(key: VirtualKey, kind: str) -> None:
        if key.status == "failed":
            raise FailedPrecondition("this idempotency key's create was refused: the partner's balance was too low")
        if key.kind != kind:
            raise InvalidArgument("idempotency_key", "already used for another kind of key")

    @staticmethod
    async def _by_idempotency(session: AsyncSession, partner_id: str, idem: str) -> VirtualKey | None:
        """Stored scoped by owner: ``p:<key>`` for the partner's creates, ``c:<customer>:<key>``
        for each customer's."""
        return (
            await session.exec(
                select(VirtualKey).where(VirtualKey.partner_id == partner_id, VirtualKey.idempotency_key == idem)
            )
        ).first()

    async def _insert(self, session: AsyncSession, key: VirtualKey, partner_id: str, idem: str) -> VirtualKey:
        session.add(key)
        try:
            await session.commit()
            return key
        except IntegrityError:  # the same idempotency key, concurrently
            await session.rollback()
            existing = await self._by_idempotency(session, partner_id, idem)
            if existing is None:
                raise
            return existing

    async def _activate(
        self, key_id: str, funding_id: str | None, amount: int, fee: int, secret: str
    ) -> tuple[VirtualKey, str]:
        """provisioning -> active with ``secret`` (recording the funding once). A key past
        provisioning was activated by an earlier call, whose answer carried its secret:
        it is left as it is and no secret is returned ("")."""
        async with self.sessions() as session:
            key = await session.get(VirtualKey, key_id, with_for_update=True)
            if funding_id is not None and await session.get(KeyFunding, funding_id) is None:
                session.add(KeyFunding(idempotency_id=funding_id, key_id=key_id, amount_ucr=amount, fee_ucr=fee))
                key.funded_ucr += amount
            activated = key.status == "provisioning"
            if activated:
                key.key_hash, key.prefix = hash_secret(secret), display_prefix(secret)
                key.status = "active"
            session.add(key)
            await session.commit()
            return key, secret if activated else ""

    async def finish_provisioning(self, key: VirtualKey) -> None:
        """For the reconciler: a ``provisioning`` row no client retried is activated when
        the ledger shows its funding (or deposit) happened, marked failed when it did not.
        Its secret is never shown: the owner regenerates."""
        account = f"key:{key.id}" if key.kind == "partner" else f"keydeposit:{key.id}"
        balance = await self.funding.balance(account)
        if balance is None:
            await transitions.set_status(self.sessions, key.id, "failed", "funding never happened")
            return
        funding_id = f"fund:{key.id}:create" if key.kind == "partner" else None
        _, shown = await self._activate(key.id, funding_id, balance.posted_ucr + balance.pending_ucr, 0, new_secret())
        if shown:
            log.warning(
                "activated a key whose create was never retried; its secret must be regenerated",
                extra={"key_id": key.id},
            )

    # -- regenerate ------------------------------------------------------------------

    async def regenerate(self, actor, key_id: str, idempotency_key: str) -> Created:
        idem = validation.idempotency_key(idempotency_key)
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            key = access.changeable_key(acting, await session.get(VirtualKey, key_id))
        secret = new_secret()
        async with self.sessions() as session:
            row = await session.get(VirtualKey, key.id, with_for_update=True)
            if await session.get(KeyRotation, (row.id, idem)) is not None:
                return Created(row, acting.partner, "", 0, 0, replayed=True)
            if row.status == "revoked":
                raise FailedPrecondition("a revoked key cannot be regenerated")
            stale = row.key_hash
            row.key_hash, row.prefix = hash_secret(secret), display_prefix(secret)
            session.add(row)
            session.add(KeyRotation(key_id=row.id, idempotency_key=idem))
            await session.commit()
        await self.events.publish(row, "regenerated", stale_hashes=[stale])
        return Created(row, acting.partner, secret, 0, 0)
