"""Changes to a key after its creation: its status (revoke, suspend, resume, exhausted)
and its fields. (Creating keys and their secrets is ``issuing``; money with the ledger,
top-ups and what a revoke gives back included, is ``money``; reads are ``reads``.)

Every change is decided under the key's row lock (``repository.locked``), on the key as
it is then, and an impossible one is refused (FAILED_PRECONDITION): nothing but a read
leaves a revoked key, and only an active key that cannot pay for its cheapest request is
exhausted. A change that already happened (resume an active key, revoke a revoked one)
is an idempotent OK, so a retry converges.
"""

from __future__ import annotations

import logging

from cg_keys import budget, keyfields
from cg_keys.catalog import Catalog
from cg_keys.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from cg_keys.events import KeyEvents
from cg_keys.funding import Funding
from cg_keys.models import Partner, VirtualKey
from cg_keys.money import KeyMoney
from cg_keys.repository import KeyRepository
from cg_keys.transitions import AUTOMATIC, Suspension, transition
from cglib.faults import crash_point
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2

log = logging.getLogger(__name__)

Keyed = tuple[VirtualKey, Partner]  # a key, and the partner whose terms a read of it shows
MAX_NOTE = 200


class KeyOps:
    def __init__(
        self, repo: KeyRepository, catalog: Catalog, funding: Funding, money: KeyMoney, events: KeyEvents
    ) -> None:
        self.repo = repo
        self.catalog = catalog
        self.funding = funding
        self.money = money
        self.events = events

    # -- status ----------------------------------------------------------------------

    async def revoke(self, actor: keys_pb2.Actor, key_id: str) -> Keyed:
        """Revoked at once (final), then its money goes back (``money.settle_revoked``)."""
        acting, key = await self.repo.changeable(actor, key_id)
        key, changed = await transition(self.repo, key.id, "revoked", "revoked", lambda k: k.status != "revoked")
        if changed:
            await self.events.publish(key, events_pb2.KEY_CHANGE_REVOKED)
        crash_point("revoke:before_refund")
        return await self.money.settle_revoked(key), acting.partner

    async def suspend(self, actor: keys_pb2.Actor, key_id: str, suspension: Suspension, note: str) -> Keyed:
        """Suspends the key (``Suspension.NONE`` means ``BY_PARTNER``), with a note for people."""
        if len(note) > MAX_NOTE or not note.isprintable():
            raise InvalidArgument("note", f"at most {MAX_NOTE} printable characters")
        acting, key = await self.repo.changeable(actor, key_id, partner_only=True)
        why = suspension or Suspension.BY_PARTNER

        def allowed(k: VirtualKey) -> bool:
            if k.status == "revoked":
                raise FailedPrecondition(f"the key is {k.status}")
            # a deliberate suspension outranks the worker's (whose resume must not lift it),
            # never the other way round
            return k.status != "suspended" or (k.suspension in AUTOMATIC and why not in AUTOMATIC)

        key, changed = await transition(self.repo, key.id, "suspended", note.strip(), allowed, why)
        if changed:
            await self.events.publish(key, events_pb2.KEY_CHANGE_SUSPENDED)
        return key, acting.partner

    async def resume(self, actor: keys_pb2.Actor, key_id: str, only_if: Suspension) -> Keyed:
        """suspended or exhausted -> active (only if suspended for ``only_if``, when given).
        An active key stays as it is (OK); a revoked key cannot come back."""
        acting, key = await self.repo.changeable(actor, key_id, partner_only=True)

        def allowed(k: VirtualKey) -> bool:
            if k.status == "revoked":
                raise FailedPrecondition("a revoked key cannot be resumed")
            return k.status in ("suspended", "exhausted") and (not only_if or k.suspension == only_if)

        key, changed = await transition(self.repo, key.id, "active", "", allowed)
        if changed:
            await self.events.publish(key, events_pb2.KEY_CHANGE_RESUMED)
        return key, acting.partner

    async def mark_exhausted(self, actor: keys_pb2.Actor, key_id: str) -> Keyed:
        """For the worker: decided again here, with the ledger's balance read now (see
        ``budget``): a key that can still pay for its cheapest request stays active
        (FAILED_PRECONDITION). The balance is read before the key's row is locked — never
        a network call inside a transaction: on SQLite that would hold the service's one
        connection — and the row is changed only if no funding was recorded since the
        read; a top-up that lands after that revives the key when it records its funding
        (under the same lock), so the two cannot cross."""
        acting, key = await self.repo.changeable(actor, key_id, partner_only=True)
        if key.kind != "partner":
            raise FailedPrecondition("a customer-created key has no budget of its own")
        need = budget.min_request_ucr(self.catalog, acting.partner.tier, key.allowed_models)
        balance = await self.funding.balance(key.budget_account)
        settled = balance.posted_ucr if balance is not None else 0
        async with self.repo.locked(key.id) as (_, row):
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
        await self.events.publish(row, events_pb2.KEY_CHANGE_EXHAUSTED)
        return row, acting.partner

    # -- fields ----------------------------------------------------------------------

    async def update(self, actor: keys_pb2.Actor, key_id: str, fields: keys_pb2.KeyFields, mask: list[str]) -> Keyed:
        if not mask:
            raise InvalidArgument("update_mask", "name at least one field")
        acting, key = await self.repo.changeable(actor, key_id)
        allowed = keyfields.CUSTOMER_EDITABLE if acting.customer is not None else keyfields.EDITABLE
        for name in mask:
            if name not in keyfields.EDITABLE:
                raise InvalidArgument("update_mask", f"unknown field {name[:50]!r}")
            if name not in allowed:
                raise PermissionDenied(f"a customer may not change {name}")
        async with self.repo.locked(key.id) as (session, row):
            if row.status == "revoked":
                raise FailedPrecondition("a revoked key cannot be changed")
            await keyfields.apply(session, self.catalog, acting, row, fields, mask)
        await self.events.publish(row, events_pb2.KEY_CHANGE_UPDATED)
        return row, acting.partner
