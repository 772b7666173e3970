"""The virtual-key lifecycle after creation, and reads. (Creating keys and their
secrets is ``issuing``.)

Money and keys never disagree, even if a process dies between the two steps:

- **top-up**: the ledger first (idempotency id from the caller's key), then a
  ``key_fundings`` row with the same id adds to ``funded_ucr`` once.
- **revoke**: the key is revoked first (final, at once), then its money goes back
  (refund or deposit release, idempotent); ``settled_on_revoke`` records that, and a
  retried revoke or the reconciler finishes it. The ledger closes the key's account:
  holds still in flight then release to the partner as they settle (see ``budget``).

Every change is decided under the key's row lock, on the key as it is then, and an
impossible one is refused (FAILED_PRECONDITION): nothing but a read leaves a revoked
key, and only an active key that cannot pay for its cheapest request is exhausted. A
change that already happened (resume an active key, revoke a revoked one) is an
idempotent OK, so a retry converges.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys import access, budget, keyfields, validation
from cg_keys.catalog import Catalog
from cg_keys.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from cg_keys.events import KeyEvents
from cg_keys.funding import UCR_PER_CREDIT, Funding
from cg_keys.issuing import KeyIssuer
from cg_keys.models import KeyFunding, Partner, VirtualKey
from cg_keys.transitions import AUTOMATIC_REASONS, transition
from cglib.faults import crash_point

log = logging.getLogger(__name__)

Keyed = tuple[VirtualKey, Partner]  # a key, and the partner whose terms a read of it shows


class KeyOps:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalog: Catalog,
        funding: Funding,
        events: KeyEvents,
        issuer: KeyIssuer,
        auto_topup_daily_max: int = 5,
    ) -> None:
        self.sessions = sessions
        self.catalog = catalog
        self.funding = funding
        self.events = events
        self.issuer = issuer
        self.auto_topup_daily_max = auto_topup_daily_max

    async def _changeable(self, actor, key_id: str, partner_only: bool = False):
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            if partner_only:
                access.require_partner(acting)
            return acting, access.changeable_key(acting, await session.get(VirtualKey, key_id))

    # -- status ----------------------------------------------------------------------

    async def revoke(self, actor, key_id: str) -> Keyed:
        acting, key = await self._changeable(actor, key_id)
        key, changed = await transition(self.sessions, key.id, "revoked", "revoked", lambda k: k.status != "revoked")
        if changed:
            await self.events.publish(key, "revoked")
        crash_point("revoke:before_refund")
        return await self.settle_revoked(key), acting.partner

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

    async def suspend(self, actor, key_id: str, reason: str) -> Keyed:
        acting, key = await self._changeable(actor, key_id, partner_only=True)
        reason = reason or "suspended"

        def allowed(k: VirtualKey) -> bool:
            if k.status == "revoked":
                raise FailedPrecondition(f"the key is {k.status}")
            # a deliberate suspension outranks the worker's (whose resume must not lift it),
            # never the other way round
            return k.status != "suspended" or (k.status_reason in AUTOMATIC_REASONS and reason not in AUTOMATIC_REASONS)

        key, changed = await transition(self.sessions, key.id, "suspended", reason, allowed)
        if changed:
            await self.events.publish(key, "suspended")
        return key, acting.partner

    async def resume(self, actor, key_id: str, only_if_reason: str) -> Keyed:
        """suspended or exhausted -> active (only if suspended for ``only_if_reason``, when
        given). An active key stays as it is (OK); a revoked key cannot come back."""
        acting, key = await self._changeable(actor, key_id, partner_only=True)

        def allowed(k: VirtualKey) -> bool:
            if k.status == "revoked":
                raise FailedPrecondition("a revoked key cannot be resumed")
            return k.status in ("suspended", "exhausted") and (not only_if_reason or k.status_reason == only_if_reason)

        key, changed = await transition(self.sessions, key.id, "active", "", allowed)
        if changed:
            await self.events.publish(key, "resumed")
        return key, acting.partner

    async def mark_exhausted(self, actor, key_id: str) -> Keyed:
        """For the worker: decided again here, with the ledger's balance read now (see
        ``budget``): a key that can still pay for its cheapest request stays active
        (FAILED_PRECONDITION). The balance is read before the key's row is locked — never
        a network call inside a transaction: on SQLite that would hold the service's one
        connection — and the row is changed only if no funding was recorded since the
        read; a top-up that lands after that revives the key when it records its funding
        (under the same lock), so the two cannot cross."""
        acting, key = await self._changeable(actor, key_id, partner_only=True)
        if key.kind != "partner":
            raise FailedPrecondition("a customer-created key has no budget of its own")
        need = budget.min_request_ucr(self.catalog, acting.partner.tier, key.allowed_models)
        balance = await self.funding.balance(key.budget_account)
        settled = balance.posted_ucr if balance is not None else 0
        async with self.sessions() as session:
            row = await session.get(VirtualKey, key.id, with_for_update=True)
            if row.status == "exhausted":
                return row, acting.partner
            if row.status != "active":
                raise FailedPrecondition(f"the key is {row.status}: only an active key becomes exhausted")
            if row.funded_ucr != key.funded_ucr:
                raise FailedPrecondition("the key was funded while this was decided; look again")
            if not budget.is_exhausted(settled, need):
                raise FailedPrecondition(
                    f"the key can still pay for a request: {settled} ucr settled, its cheapest request takes {need}"
                )
            row.status, row.status_reason = "exhausted", "budget spent"
            session.add(row)
            await session.commit()
        await self.events.publish(row, "exhausted")
        return row, acting.partner

    # -- top-up ----------------------------------------------------------------------

    async def top_up(self, actor, key_id: str, idempotency_key: str, amount_credits: int, automatic: bool = False):
        """Returns ``(key, partner, funded, replayed)``."""
        amount = validation.credits(amount_credits, "amount_credits") * UCR_PER_CREDIT
        idempotency_key = validation.idempotency_key(idempotency_key)
        acting, key = await self._changeable(actor, key_id, partner_only=True)
        if key.kind != "partner":
            raise FailedPrecondition("a customer-created key has no budget to top up")
        tier = self.catalog.tier(acting.partner.tier)
        kind = "auto" if automatic else "topup"
        funding_id = f"fund:{key.id}:{kind}:{idempotency_key}"
        async with self.sessions() as session:
            done = await session.get(KeyFunding, funding_id) is not None
        if key.status == "revoked" and not done:  # a retry of a top-up made before the revoke converges
            raise FailedPrecondition("the key is revoked")
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
        return key, acting.partner, funded, not new

    async def _check_daily_ceiling(self, key_id: str, funding_id: str) -> None:
        since = int(time.time()) - 86_400
        async with self.sessions() as session:
            if await session.get(KeyFunding, funding_id) is not None:
                return  # a retry of a top-up that happened: not a new one
            recent = (
                await session.exec(
                    select(KeyFunding.idempotency_id).where(
                        KeyFunding.key_id == key_id,
                        KeyFunding.created_at >= since,
                        KeyFunding.idempotency_id.startswith(f"fund:{key_id}:auto:"),
                    )
                )
            ).all()
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

    # -- fields ----------------------------------------------------------------------

    async def update(self, actor, key_id: str, fields, mask: list[str]) -> Keyed:
        if not mask:
            raise InvalidArgument("update_mask", "name at least one field")
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            key = access.changeable_key(acting, await session.get(VirtualKey, key_id, with_for_update=True))
            allowed = keyfields.CUSTOMER_EDITABLE if acting.customer is not None else keyfields.EDITABLE
            for name in mask:
                if name not in keyfields.EDITABLE:
                    raise InvalidArgument("update_mask", f"unknown field {name[:50]!r}")
                if name not in allowed:
                    raise PermissionDenied(f"a customer may not change {name}")
            if key.status == "revoked":
                raise FailedPrecondition("a revoked key cannot be changed")
            await keyfields.apply(session, self.catalog, acting, key, fields, mask)
            session.add(key)
            await session.commit()
        await self.events.publish(key, "updated")
        return key, acting.partner

    # -- reads -----------------------------------------------------------------------

    async def get(self, actor, key_id: str):
        """``(key, partner, balance)``; the balance of a partner key's account (None for a
        customer-created key, which has none of its own)."""
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            key = access.visible_key(acting, await session.get(VirtualKey, key_id))
        balance = await self.funding.balance(key.budget_account) if key.kind == "partner" else None
        return key, acting.partner, balance

    async def list(self, actor, include_revoked: bool):
        """``(partner, [(key, balance or None)])``."""
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            q = select(VirtualKey).where(
                VirtualKey.partner_id == acting.partner.id, VirtualKey.status.not_in(("provisioning", "failed"))
            )
            if not include_revoked:
                q = q.where(VirtualKey.status != "revoked")
            if acting.customer is not None:
                q = q.where(
                    (VirtualKey.owner_customer_id == acting.customer.id)
                    | (VirtualKey.billing_customer_id == acting.customer.id)
                )
            keys = list((await session.exec(q.order_by(VirtualKey.created_at, VirtualKey.id))).all())
        balances = await self.funding.balances([k.budget_account for k in keys if k.kind == "partner"])
        return acting.partner, [(k, balances.get(k.budget_account) if k.kind == "partner" else None) for k in keys]

    async def authenticate(self, key_hash: str) -> Keyed:
        async with self.sessions() as session:
            key = (await session.exec(select(VirtualKey).where(VirtualKey.key_hash == key_hash))).first()
            if key is None or key.status in ("provisioning", "failed"):
                raise NotFound("key not found")
            partner = await session.get(Partner, key.partner_id)
        return key, partner

    def min_request_ucr(self, key: VirtualKey, partner: Partner) -> int:
        return budget.min_request_ucr(self.catalog, partner.tier, key.allowed_models)

    # -- convergence without a client retry -------------------------------------------

    async def reconcile(self, stale_after_s: int = 60) -> int:
        """Finishes what a crash left half done: revoked keys whose money was not yet
        returned, and ``provisioning`` rows no client retried (``issuing``). Ledger calls
        time out in seconds, so a row this old has no call in flight."""
        cutoff = int(time.time()) - stale_after_s
        async with self.sessions() as session:
            revoked = list(
                (
                    await session.exec(
                        select(VirtualKey).where(
                            VirtualKey.status == "revoked", col(VirtualKey.settled_on_revoke).is_(False)
                        )
                    )
                ).all()
            )
            stuck = list(
                (
                    await session.exec(
                        select(VirtualKey).where(VirtualKey.status == "provisioning", VirtualKey.created_at < cutoff)
                    )
                ).all()
            )
        for key in revoked:
            await self.settle_revoked(key)
        for key in stuck:
            await self.issuer.finish_provisioning(key)
        return len(revoked) + len(stuck)
