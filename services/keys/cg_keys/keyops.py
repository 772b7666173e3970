"""The virtual-key lifecycle.

Money and keys never disagree, even if a process dies between the two steps:

1. **create**: the key row is written first as ``provisioning`` (it cannot
   authenticate and is in no list), then the ledger funds it under an idempotency id
   derived from the key id, then the row turns ``active``. A retry with the same
   idempotency key finds the row and repeats the (idempotent) funding; the
   reconciler does the same for rows left behind. A refused funding marks the row
   ``failed``, so no key exists unfunded and no credits leave for a key that doesn't.
2. **top-up**: the ledger first (idempotency id from the caller's key), then a
   ``key_fundings`` row with the same id adds to ``funded_ucr`` once.
3. **revoke**: the key is revoked first (final, at once), then its money goes back
   (refund or deposit release, idempotent); ``settled_on_revoke`` records that, and a
   retried revoke or the reconciler finishes it.

The secret is returned once. A create whose answer was lost is retried with the same
idempotency key and answered with a fresh secret for the same key.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys import access, validation
from cg_keys.catalog import Catalog
from cg_keys.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from cg_keys.events import KeyEvents
from cg_keys.funding import UCR_PER_CREDIT, Funding
from cg_keys.models import Customer, KeyFunding, Partner, VirtualKey
from cglib.faults import crash_point
from cglib.ids import new_id
from cglib.keysecret import display_prefix, hash_secret, new_secret

log = logging.getLogger(__name__)

DEPOSIT_UCR = 1_000 * UCR_PER_CREDIT
# Suspension reasons the worker sets and lifts by itself (only_if_reason on resume); a
# suspension for any other reason replaces them.
AUTOMATIC_REASONS = frozenset({"deposit_line"})
EDITABLE = ("name", "description", "allowed_models", "billing", "auto_topup", "allowed_domains", "rpm_limit",
            "tpm_limit", "expires_at_unix")
CUSTOMER_EDITABLE = ("name", "description", "allowed_models")


@dataclass
class Created:
    key: VirtualKey
    secret: str
    total_ucr: int
    fee_ucr: int


def effective_status(key: VirtualKey, now: int | None = None) -> str:
    if key.status == "active" and key.expires_at and key.expires_at <= (now or time.time()):
        return "expired"
    return key.status


class KeyOps:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], catalog: Catalog, funding: Funding,
                 events: KeyEvents, auto_topup_daily_max: int = 5) -> None:
        self.sessions = sessions
        self.catalog = catalog
        self.funding = funding
        self.events = events
        self.auto_topup_daily_max = auto_topup_daily_max

    # -- validation ------------------------------------------------------------------

    def _models(self, partner: Partner, models: Iterable[str]) -> list[str]:
        models = list(models)
        if not models:
            raise InvalidArgument("allowed_models", "at least one model")
        if len(models) > validation.MAX_MODELS:
            raise InvalidArgument("allowed_models", f"at most {validation.MAX_MODELS}")
        for i, model in enumerate(models):
            if self.catalog.get(model) is None:
                raise InvalidArgument(f"allowed_models[{i}]", f"{model[:100]!r} is not in the catalog")
            if not self.catalog.allowed(partner.tier, model):
                raise InvalidArgument(f"allowed_models[{i}]", f"{model!r} is not in the {partner.tier} tier")
        return list(dict.fromkeys(models))

    async def _apply_fields(self, session: AsyncSession, acting: access.Acting, key: VirtualKey, fields,
                            names: Iterable[str]) -> None:
        """Validates and sets the named fields of ``fields`` on ``key``."""
        names = set(names)
        if "name" in names:
            key.name = validation.name(fields.name)
        if "description" in names:
            key.description = validation.description(fields.description)
        if "allowed_models" in names:
            key.allowed_models = self._models(acting.partner, fields.allowed_models)
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
                customer = await session.get(Customer, b.customer_id)
                if customer is None or customer.partner_id != acting.partner.id:
                    raise InvalidArgument("billing.customer_id", "not one of your customers")
                key.billing_customer_id = customer.id
                key.profit_multiplier = validation.decimal(b.profit_multiplier, "billing.profit_multiplier",
                                                           positive=True)
                key.price_per_ai_credit_cents = validation.decimal(
                    b.price_per_ai_credit_cents, "billing.price_per_ai_credit_cents", positive=True)
                key.floor_usd_per_mtok = validation.decimal(b.floor_usd_per_mtok, "billing.floor_usd_per_mtok",
                                                            optional=True)
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

    # -- create ----------------------------------------------------------------------

    async def quote(self, actor, budget_credits: int):
        budget = validation.credits(budget_credits, "budget_credits") * UCR_PER_CREDIT
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
        tier = self.catalog.tier(acting.partner.tier)
        return await self.funding.quote(budget, str(tier.fee_rate)), str(tier.fee_rate)

    async def create_partner_key(self, actor, idempotency_key: str, fields, budget_credits: int) -> Created:
        budget = validation.credits(budget_credits, "budget_credits") * UCR_PER_CREDIT
        idem = "p:" + self._idempotency_key(idempotency_key)
        secret = new_secret()
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            access.require_partner(acting)
            key = await self._by_idempotency(session, acting.partner.id, idem)
            if key is None:
                key_id = new_id("key")
                key = VirtualKey(id=key_id, partner_id=acting.partner.id, name="", key_hash=hash_secret(secret),
                                 prefix=display_prefix(secret), budget_account=f"key:{key_id}", kind="partner",
                                 idempotency_key=idem)
                await self._apply_fields(session, acting, key, fields, EDITABLE)
                key = await self._insert(session, key, acting.partner.id, idem)
            partner = acting.partner
        if key.status == "failed":
            raise FailedPrecondition("this idempotency key's create was refused: the partner's balance was too low")
        if key.kind != "partner":
            raise InvalidArgument("idempotency_key", "already used for another kind of key")
        tier = self.catalog.tier(partner.tier)
        try:
            funded = await self.funding.fund(f"fund:{key.id}:create", partner.id, key.id, budget, str(tier.fee_rate))
        except FailedPrecondition:
            await self._set_status(key.id, "failed", "funding refused")
            raise
        crash_point("create:after_funding")
        key, secret = await self._activate(key.id, f"fund:{key.id}:create", funded.budget_ucr, funded.fee_ucr,
                                           secret)
        await self.events.publish(key, "created")
        return Created(key, secret, funded.total_ucr, funded.fee_ucr)

    async def create_customer_key(self, actor, idempotency_key: str, name: str, description: str,
                                  models: list[str]) -> Created:
        idem = self._idempotency_key(idempotency_key)
        secret = new_secret()
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            if acting.customer is None:
                raise PermissionDenied("customer keys are created by a customer")
            partner, customer = acting.partner, acting.customer
            idem = f"c:{customer.id}:{idem}"  # each owner has its own idempotency keys
            for ok, what in ((partner.ss_enabled, "the partner has not enabled customer self-service"),
                             (customer.ai_credits_enabled, "AI Credits are not enabled for this customer"),
                             (customer.ai_gateway_visible, "the AI Gateway menu is not enabled for this customer")):
                if not ok:
                    raise FailedPrecondition(what)
            key = await self._by_idempotency(session, partner.id, idem)
            if key is None:
                key_id = new_id("key")
                key = VirtualKey(
                    id=key_id, partner_id=partner.id, name=validation.name(name),
                    description=validation.description(description), key_hash=hash_secret(secret),
                    prefix=display_prefix(secret), budget_account=f"partner:{partner.id}", kind="customer",
                    owner_customer_id=customer.id, billing_customer_id=customer.id,
                    allowed_models=self._models(partner, models), idempotency_key=idem,
                )
                key = await self._insert(session, key, partner.id, idem)
        if key.status == "failed":
            raise FailedPrecondition("this idempotency key's create was refused: the partner's balance was too low")
        if key.kind != "customer":
            raise InvalidArgument("idempotency_key", "already used for another kind of key")
        try:
            await self.funding.hold_deposit(f"deposit:{key.id}", partner.id, key.id, DEPOSIT_UCR)
        except FailedPrecondition:
            await self._set_status(key.id, "failed", "deposit refused")
            raise
        key, secret = await self._activate(key.id, None, 0, 0, secret)
        await self.events.publish(key, "created")
        return Created(key, secret, DEPOSIT_UCR, 0)

    @staticmethod
    def _idempotency_key(value: str) -> str:
        """The caller's idempotency key (or a fresh one). Stored scoped by owner: ``p:<key>``
        for the partner's creates, ``c:<customer>:<key>`` for each customer's."""
        if len(value) > 120 - 40:
            raise InvalidArgument("idempotency_key", "at most 80 characters")
        return value or new_id("auto", 24)

    @staticmethod
    async def _by_idempotency(session: AsyncSession, partner_id: str, idem: str) -> VirtualKey | None:
        return (await session.exec(select(VirtualKey).where(
            VirtualKey.partner_id == partner_id, VirtualKey.idempotency_key == idem))).first()

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

    async def _activate(self, key_id: str, funding_id: str | None, amount: int, fee: int,
                        secret: str) -> tuple[VirtualKey, str]:
        """provisioning -> active (recording the funding once). A key that was active
        already (a retried create) gets a fresh secret: nobody has seen the old one."""
        async with self.sessions() as session:
            key = await session.get(VirtualKey, key_id, with_for_update=True)
            if funding_id is not None and await session.get(KeyFunding, funding_id) is None:
                session.add(KeyFunding(idempotency_id=funding_id, key_id=key_id, amount_ucr=amount, fee_ucr=fee))
                key.funded_ucr += amount
            if key.key_hash != hash_secret(secret):
                key.key_hash, key.prefix = hash_secret(secret), display_prefix(secret)
            if key.status == "provisioning":
                key.status = "active"
            session.add(key)
            await session.commit()
            return key, secret

    async def _set_status(self, key_id: str, status: str, reason: str) -> VirtualKey:
        key, _ = await self._transition(key_id, status, reason, lambda _: True)
        return key

    async def _transition(self, key_id: str, status: str, reason: str,
                          allowed: Callable[[VirtualKey], bool]) -> tuple[VirtualKey, bool]:
        """Sets the status if ``allowed(key)`` holds for the key as it is now, decided under
        the row's lock (SQLite: the write lock): a check made before, on a read, could be
        stale by then. Returns the key and whether it changed."""
        async with self.sessions() as session:
            key = await session.get(VirtualKey, key_id, with_for_update=True)
            if not allowed(key):
                return key, False
            key.status, key.status_reason = status, reason[:200]
            session.add(key)
            await session.commit()
            return key, True

    # -- lifecycle -------------------------------------------------------------------

    async def _changeable(self, actor, key_id: str, partner_only: bool = False):
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            if partner_only:
                access.require_partner(acting)
            return acting, access.changeable_key(acting, await session.get(VirtualKey, key_id))

    async def regenerate(self, actor, key_id: str) -> Created:
        _, key = await self._changeable(actor, key_id)
        if key.status == "revoked":
            raise FailedPrecondition("a revoked key cannot be regenerated")
        secret = new_secret()
        async with self.sessions() as session:
            row = await session.get(VirtualKey, key.id, with_for_update=True)
            stale = row.key_hash
            row.key_hash, row.prefix = hash_secret(secret), display_prefix(secret)
            session.add(row)
            await session.commit()
        await self.events.publish(row, "regenerated", stale_hashes=[stale])
        return Created(row, secret, 0, 0)

    async def revoke(self, actor, key_id: str) -> VirtualKey:
        _, key = await self._changeable(actor, key_id)
        if key.status != "revoked":
            key = await self._set_status(key.id, "revoked", "revoked")
            await self.events.publish(key, "revoked")
        crash_point("revoke:before_refund")
        return await self.settle_revoked(key)

    async def settle_revoked(self, key: VirtualKey) -> VirtualKey:
        """Returns a revoked key's money to its partner, once (idempotent)."""
        if key.settled_on_revoke:
            return key
        if key.kind == "partner":
            amount = await self.funding.refund(f"refund:{key.id}", key.partner_id, key.id)
        else:
            amount = await self.funding.release_deposit(f"release:{key.id}", key.partner_id, key.id)
        async with self.sessions() as session:
            row = await session.get(VirtualKey, key.id, with_for_update=True)
            if not row.settled_on_revoke:
                row.settled_on_revoke = True
                row.refunded_ucr = amount if key.kind == "partner" else 0
                session.add(row)
                await session.commit()
            return row

    async def suspend(self, actor, key_id: str, reason: str) -> VirtualKey:
        _, key = await self._changeable(actor, key_id, partner_only=True)
        reason = reason or "suspended"

        def allowed(k: VirtualKey) -> bool:
            if k.status == "revoked":
                raise FailedPrecondition(f"the key is {k.status}")
            # a deliberate suspension outranks the worker's (whose resume must not lift it),
            # never the other way round
            return k.status != "suspended" or (
                k.status_reason in AUTOMATIC_REASONS and reason not in AUTOMATIC_REASONS)

        key, changed = await self._transition(key.id, "suspended", reason, allowed)
        if changed:
            await self.events.publish(key, "suspended")
        return key

    async def resume(self, actor, key_id: str, only_if_reason: str) -> VirtualKey:
        _, key = await self._changeable(actor, key_id, partner_only=True)
        key, changed = await self._transition(key.id, "active", "", lambda k: k.status in ("suspended", "exhausted") and (
            not only_if_reason or k.status_reason == only_if_reason))
        if changed:
            await self.events.publish(key, "resumed")
        return key

    async def top_up(self, actor, key_id: str, idempotency_key: str, amount_credits: int, automatic: bool = False):
        amount = validation.credits(amount_credits, "amount_credits") * UCR_PER_CREDIT
        if not idempotency_key or len(idempotency_key) > 80:
            raise InvalidArgument("idempotency_key", "required, at most 80 characters")
        acting, key = await self._changeable(actor, key_id, partner_only=True)
        if key.kind != "partner":
            raise FailedPrecondition("a customer-created key has no budget to top up")
        if key.status == "revoked":
            raise FailedPrecondition("the key is revoked")
        tier = self.catalog.tier(acting.partner.tier)
        kind = "auto" if automatic else "topup"
        funding_id = f"fund:{key.id}:{kind}:{idempotency_key}"
        try:
            if automatic:
                await self._check_daily_ceiling(key.id, funding_id)
            funded = await self.funding.fund(funding_id, key.partner_id, key.id, amount, str(tier.fee_rate))
        except FailedPrecondition as e:
            if automatic:
                await self._record_auto_topup_failure(key.id, str(e))
            raise
        crash_point("topup:after_funding")
        key, new = await self._record_topup(key.id, funding_id, funded.budget_ucr, funded.fee_ucr)
        if new:
            await self.events.publish(key, "topped_up")
        return key, funded, not new

    async def _check_daily_ceiling(self, key_id: str, funding_id: str) -> None:
        since = int(time.time()) - 86_400
        async with self.sessions() as session:
            if await session.get(KeyFunding, funding_id) is not None:
                return  # a retry of a top-up that happened: not a new one
            recent = (await session.exec(select(KeyFunding.idempotency_id).where(
                KeyFunding.key_id == key_id, KeyFunding.created_at >= since,
                KeyFunding.idempotency_id.startswith(f"fund:{key_id}:auto:")))).all()
        if len(recent) >= self.auto_topup_daily_max:
            raise FailedPrecondition(f"the daily ceiling of {self.auto_topup_daily_max} automatic top-ups is reached")

    async def _record_auto_topup_failure(self, key_id: str, reason: str) -> None:
        async with self.sessions() as session:
            key = await session.get(VirtualKey, key_id, with_for_update=True)
            key.auto_topup_error, key.auto_topup_error_at = reason[:200], int(time.time())
            session.add(key)
            await session.commit()
        await self.events.publish(key, "auto_topup_failed")

    async def _record_topup(self, key_id: str, funding_id: str, amount: int, fee: int) -> tuple[VirtualKey, bool]:
        """Records a ledger funding on the key once; says whether this call recorded it."""
        async with self.sessions() as session:
            key = await session.get(VirtualKey, key_id, with_for_update=True)
            new = await session.get(KeyFunding, funding_id) is None
            if new:
                session.add(KeyFunding(idempotency_id=funding_id, key_id=key_id, amount_ucr=amount, fee_ucr=fee))
                key.funded_ucr += amount
            if key.status == "exhausted":
                key.status, key.status_reason = "active", ""
            if funding_id.startswith(f"fund:{key_id}:auto:"):
                key.auto_topup_error, key.auto_topup_error_at = "", 0
            session.add(key)
            await session.commit()
            return key, new

    async def mark_exhausted(self, actor, key_id: str) -> VirtualKey:
        _, key = await self._changeable(actor, key_id, partner_only=True)
        if key.kind != "partner":
            raise FailedPrecondition("a customer-created key has no budget of its own")
        key, changed = await self._transition(key.id, "exhausted", "budget spent", lambda k: k.status == "active")
        if changed:
            await self.events.publish(key, "exhausted")
        return key

    async def update(self, actor, key_id: str, fields, mask: list[str]) -> VirtualKey:
        if not mask:
            raise InvalidArgument("update_mask", "name at least one field")
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            key = access.changeable_key(acting, await session.get(VirtualKey, key_id))
            allowed = CUSTOMER_EDITABLE if acting.customer is not None else EDITABLE
            for name in mask:
                if name not in EDITABLE:
                    raise InvalidArgument("update_mask", f"unknown field {name[:50]!r}")
                if name not in allowed:
                    raise PermissionDenied(f"a customer may not change {name}")
            if key.status == "revoked":
                raise FailedPrecondition("a revoked key cannot be changed")
            await self._apply_fields(session, acting, key, fields, mask)
            session.add(key)
            await session.commit()
        await self.events.publish(key, "updated")
        return key

    # -- reads -----------------------------------------------------------------------

    async def get(self, actor, key_id: str):
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            key = access.visible_key(acting, await session.get(VirtualKey, key_id))
        balance = await self.funding.balance(key.budget_account) if key.kind == "partner" else None
        return key, balance

    async def list(self, actor, include_revoked: bool) -> list[VirtualKey]:
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            q = select(VirtualKey).where(VirtualKey.partner_id == acting.partner.id,
                                         VirtualKey.status.not_in(("provisioning", "failed")))
            if not include_revoked:
                q = q.where(VirtualKey.status != "revoked")
            if acting.customer is not None:
                q = q.where((VirtualKey.owner_customer_id == acting.customer.id)
                            | (VirtualKey.billing_customer_id == acting.customer.id))
            return list((await session.exec(q.order_by(VirtualKey.created_at, VirtualKey.id))).all())

    async def authenticate(self, key_hash: str):
        async with self.sessions() as session:
            key = (await session.exec(select(VirtualKey).where(VirtualKey.key_hash == key_hash))).first()
            if key is None or key.status in ("provisioning", "failed"):
                raise NotFound("key not found")
            partner = await session.get(Partner, key.partner_id)
        return key, partner

    # -- convergence without a client retry -------------------------------------------

    async def reconcile(self, stale_after_s: int = 60) -> int:
        """Finishes what a crash left half done: revoked keys whose money was not yet
        returned, and ``provisioning`` rows no client retried — activated when the ledger
        shows their funding (or deposit) happened, marked failed when it did not.
        Ledger calls time out in seconds, so a row this old has no call in flight."""
        cutoff = int(time.time()) - stale_after_s
        async with self.sessions() as session:
            revoked = list((await session.exec(select(VirtualKey).where(
                VirtualKey.status == "revoked", VirtualKey.settled_on_revoke == False))).all())  # noqa: E712
            stuck = list((await session.exec(select(VirtualKey).where(
                VirtualKey.status == "provisioning", VirtualKey.created_at < cutoff))).all())
        done = 0
        for key in revoked:
            await self.settle_revoked(key)
            done += 1
        for key in stuck:
            account = f"key:{key.id}" if key.kind == "partner" else f"keydeposit:{key.id}"
            balance = await self.funding.balance(account)
            if balance is None:
                await self._set_status(key.id, "failed", "funding never happened")
            else:
                funding_id = f"fund:{key.id}:create" if key.kind == "partner" else None
                await self._activate(key.id, funding_id, balance.posted_ucr + balance.pending_ucr, 0, new_secret())
                log.warning("activated a key whose create was never retried; its secret must be regenerated",
                            extra={"key_id": key.id})
            done += 1
        return done
