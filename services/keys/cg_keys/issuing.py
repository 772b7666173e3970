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

The ledger's side of a create (fund or hold, activate, and the reconciler that
activates ``provisioning`` rows nobody retried, whose secret is never shown) is
``money``'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cg_keys import access, keyfields, validation, visibility
from cg_keys.catalog import Catalog
from cg_keys.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from cg_keys.events import KeyEvents
from cg_keys.funding import Funding, key_account, partner_account
from cg_keys.models import KeyRotation, Partner, VirtualKey
from cg_keys.money import SUSPENDED_PARTNER, KeyMoney
from cg_keys.repository import KeyRepository
from cglib.ids import new_id
from cglib.keysecret import display_prefix, hash_secret, new_secret
from cglib.money import UCR_PER_CREDIT
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2

log = logging.getLogger(__name__)


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
        self, repo: KeyRepository, catalog: Catalog, funding: Funding, money: KeyMoney, events: KeyEvents
    ) -> None:
        self.repo = repo
        self.catalog = catalog
        self.funding = funding
        self.money = money
        self.events = events

    async def quote(self, actor: keys_pb2.Actor, budget_credits: int) -> tuple[ledger_pb2.FundKeyResponse, str]:
        budget = validation.credits(budget_credits, "budget_credits") * UCR_PER_CREDIT
        async with self.repo.session() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
        fee_rate = str(self.catalog.fee_rate(acting.partner.tier))
        return await self.funding.quote(budget, fee_rate), fee_rate

    # -- create ----------------------------------------------------------------------

    async def create_partner_key(
        self, actor: keys_pb2.Actor, idempotency_key: str, fields: keys_pb2.KeyFields, budget_credits: int
    ) -> Created:
        budget = validation.credits(budget_credits, "budget_credits") * UCR_PER_CREDIT
        idem = "p:" + validation.idempotency_key(idempotency_key)
        secret = new_secret()
        async with self.repo.session() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
            key = await self.repo.by_idempotency(session, acting.partner.id, idem)
            if key is None and acting.partner.status == "suspended":
                raise FailedPrecondition(SUSPENDED_PARTNER)
            if key is None:
                key_id = new_id("key")
                key = VirtualKey(
                    id=key_id,
                    partner_id=acting.partner.id,
                    name="",
                    key_hash=hash_secret(secret),
                    prefix=display_prefix(secret),
                    budget_account=key_account(key_id),
                    kind="partner",
                    idempotency_key=idem,
                )
                await keyfields.apply(session, self.catalog, acting, key, fields, keyfields.EDITABLE)
                key = await self.repo.insert(session, key)
            partner = acting.partner
        self._check_reusable(key, "partner")
        funded, funding_id = await self.money.fund_new_key(key, partner, budget)
        key, secret = await self.money.activate(key.id, funding_id, funded, secret)
        if secret:
            await self.events.publish(key, events_pb2.KEY_CHANGE_CREATED)
        return Created(key, partner, secret, funded.total_ucr, funded.fee_ucr, replayed=not secret)

    async def create_customer_key(
        self, actor: keys_pb2.Actor, idempotency_key: str, name: str, description: str, models: list[str]
    ) -> Created:
        idem = validation.idempotency_key(idempotency_key)
        secret = new_secret()
        async with self.repo.session() as session:
            acting = await access.resolve(session, actor)
            if acting.customer is None:
                raise PermissionDenied("customer keys are created by a customer")
            partner, customer = acting.partner, acting.customer
            idem = f"c:{customer.id}:{idem}"  # each owner has its own idempotency keys
            key = await self.repo.by_idempotency(session, partner.id, idem)
            if key is None and partner.status == "suspended":
                raise FailedPrecondition(SUSPENDED_PARTNER)
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
                    budget_account=partner_account(partner.id),
                    kind="customer",
                    owner_customer_id=customer.id,
                    billing_customer_id=customer.id,
                    allowed_models=keyfields.allowed_models(self.catalog, partner, models),
                    idempotency_key=idem,
                )
                key = await self.repo.insert(session, key)
        self._check_reusable(key, "customer")
        held = await self.money.hold_deposit(key, partner)
        key, secret = await self.money.activate(key.id, None, held, secret)
        if secret:
            await self.events.publish(key, events_pb2.KEY_CHANGE_CREATED)
        return Created(key, partner, secret, held.total_ucr, held.fee_ucr, replayed=not secret)

    @staticmethod
    def _check_reusable(key: VirtualKey, kind: str) -> None:
        if key.status == "failed":
            raise FailedPrecondition("this idempotency key's create was refused: the partner's balance was too low")
        if key.kind != kind:
            raise InvalidArgument("idempotency_key", "already used for another kind of key")

    # -- regenerate ------------------------------------------------------------------

    async def regenerate(self, actor: keys_pb2.Actor, key_id: str, idempotency_key: str) -> Created:
        idem = validation.idempotency_key(idempotency_key)
        acting, key = await self.repo.changeable(actor, key_id)
        secret = new_secret()
        async with self.repo.locked(key.id) as (session, row):
            if await session.get(KeyRotation, (row.id, idem)) is not None:
                return Created(row, acting.partner, "", 0, 0, replayed=True)
            if row.status == "revoked":
                raise FailedPrecondition("a revoked key cannot be regenerated")
            stale = row.key_hash
            row.key_hash, row.prefix = hash_secret(secret), display_prefix(secret)
            session.add(KeyRotation(key_id=row.id, idempotency_key=idem))
        await self.events.publish(row, events_pb2.KEY_CHANGE_REGENERATED, stale_hashes=[stale])
        return Created(row, acting.partner, secret, 0, 0)
