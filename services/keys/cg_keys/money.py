"""The money protocol between keys and the ledger, in one place.

A key's money lives in the ledger (``funding``: the calls, each under an idempotency id
derived from the key); keys records what it asked for on the key's row. The two never
disagree, even if a process dies between the steps, because each step is idempotent and
a retry (or the reconciler) finishes what a crash left:

- **create** (``fund_new_key``, ``hold_deposit``): the key row exists first, as
  ``provisioning`` (``issuing``); the ledger then funds its budget and fee (a partner
  key, id ``fund:<key>:create``) or holds the deposit (a customer-created key, id
  ``deposit:<key>``). A refusal marks the row ``failed``: no key exists unfunded, and no
  credits leave for a key that does not.
- **activate**: ``provisioning`` -> ``active`` under the row's lock, recording the
  funding on the row once (``key_fundings``, keyed by the ledger's id).
- **top-up**: the ledger first (id ``fund:<key>:topup|auto:<caller's key>``), then the
  same record adds to ``funded_ucr`` once and revives an exhausted key. Automatic
  top-ups have a daily ceiling, and a refusal is recorded on the key.
- **revoke** (``settle_revoked``): the key is revoked first (final, at once: ``keyops``),
  then its money goes back (refund ``refund:<key>`` or deposit release ``release:<key>``);
  ``settled_on_revoke`` records that it did. The ledger closes the key's account: holds
  still in flight then release to the partner as they settle (see ``budget``).
- **reconcile**: revoked keys whose money was not returned yet, and ``provisioning``
  rows no client retried (activated when the ledger shows their funding, else failed;
  their secret was never shown, so their owner regenerates).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from cg_keys import transitions, validation
from cg_keys.catalog import Catalog
from cg_keys.errors import FailedPrecondition
from cg_keys.events import KeyEvents
from cg_keys.funding import Funding, deposit_account, key_account
from cg_keys.models import Partner, VirtualKey
from cg_keys.repository import KeyRepository
from cglib.faults import crash_point
from cglib.keysecret import display_prefix, hash_secret, new_secret
from cglib.money import KEY_DEPOSIT_CREDITS, UCR_PER_CREDIT
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2

log = logging.getLogger(__name__)

DEPOSIT_UCR = KEY_DEPOSIT_CREDITS * UCR_PER_CREDIT
DAY_S = 86_400


# Money does not move for a suspended partner (its keys are refused at the proxy anyway):
# no new keys, no top-ups, until the platform resumes it. A retry of what happened before
# the suspension still converges.
SUSPENDED_PARTNER = "the partner is suspended: no new keys or top-ups until it is resumed"


@dataclass(frozen=True)
class Funded:
    """A funding the ledger made: what the key got, and the fee on top."""

    budget_ucr: int
    fee_ucr: int
    total_ucr: int


@dataclass(frozen=True)
class ToppedUp:
    key: VirtualKey
    partner: Partner
    funded: Funded
    replayed: bool


def _funded(out: ledger_pb2.FundKeyResponse) -> Funded:
    return Funded(out.budget_ucr, out.fee_ucr, out.total_ucr)


def _create_funding_id(key_id: str) -> str:
    return f"fund:{key_id}:create"


def _auto_prefix(key_id: str) -> str:
    return f"fund:{key_id}:auto:"


class KeyMoney:
    def __init__(
        self,
        repo: KeyRepository,
        catalog: Catalog,
        funding: Funding,
        events: KeyEvents,
        auto_topup_daily_max: int = 5,
    ) -> None:
        self.repo = repo
        self.catalog = catalog
        self.funding = funding
        self.events = events
        self.auto_topup_daily_max = auto_topup_daily_max

    # -- create and activate ---------------------------------------------------------

    async def fund_new_key(self, key: VirtualKey, partner: Partner, budget_ucr: int) -> tuple[Funded, str]:
        """Funds a new partner key's budget (and its tier's fee); returns what was funded
        and the funding's id (for ``activate``)."""
        funding_id = _create_funding_id(key.id)
        fee_rate = self._fee_rate(partner)
        try:
            out = await self.funding.fund(funding_id, partner.id, key.id, budget_ucr, fee_rate)
        except FailedPrecondition:
            await transitions.set_status(self.repo, key.id, "failed", "funding refused")
            raise
        crash_point("create:after_funding")
        return _funded(out), funding_id

    async def hold_deposit(self, key: VirtualKey, partner: Partner) -> Funded:
        """Holds a new customer-created key's deposit from its partner's balance."""
        try:
            await self.funding.hold_deposit(f"deposit:{key.id}", partner.id, key.id, DEPOSIT_UCR)
        except FailedPrecondition:
            await transitions.set_status(self.repo, key.id, "failed", "deposit refused")
            raise
        return Funded(0, 0, DEPOSIT_UCR)

    async def activate(
        self, key_id: str, funding_id: str | None, funded: Funded, secret: str
    ) -> tuple[VirtualKey, str]:
        """provisioning -> active with ``secret`` (recording the funding once). A key past
        provisioning was activated by an earlier call, whose answer carried its secret:
        it is left as it is and no secret is returned ("")."""
        async with self.repo.locked(key_id) as (session, key):
            if funding_id is not None:
                await self.repo.record_funding(session, key, funding_id, funded.budget_ucr, funded.fee_ucr)
            activated = key.status == "provisioning"
            if activated:
                key.key_hash, key.prefix = hash_secret(secret), display_prefix(secret)
                key.status = "active"
        return key, secret if activated else ""

    # -- top-up ----------------------------------------------------------------------

    async def top_up(
        self,
        actor: keys_pb2.Actor,
        key_id: str,
        idempotency_key: str,
        amount_credits: int,
        automatic: bool = False,
    ) -> ToppedUp:
        amount = validation.credits(amount_credits, "amount_credits") * UCR_PER_CREDIT
        idempotency_key = validation.idempotency_key(idempotency_key)
        acting, key = await self.repo.changeable(actor, key_id, partner_only=True)
        if key.kind != "partner":
            raise FailedPrecondition("a customer-created key has no budget to top up")
        fee_rate = self._fee_rate(acting.partner)
        funding_id = f"fund:{key.id}:{'auto' if automatic else 'topup'}:{idempotency_key}"
        done = await self.repo.funding_recorded(funding_id)
        if key.status == "revoked" and not done:  # a retry of a top-up made before the revoke converges
            raise FailedPrecondition("the key is revoked")
        if acting.partner.status == "suspended" and not done:
            raise FailedPrecondition(SUSPENDED_PARTNER)
        try:
            if automatic:
                await self._check_daily_ceiling(key.id, funding_id)
            out = await self.funding.fund(funding_id, key.partner_id, key.id, amount, fee_rate)
        except FailedPrecondition as e:
            if automatic:
                await self._record_auto_topup_failure(key.id, str(e))
            raise
        crash_point("topup:after_funding")
        funded = _funded(out)
        key, new = await self._record_topup(key.id, funding_id, funded)
        if new:
            await self.events.publish(key, events_pb2.KEY_CHANGE_TOPPED_UP)
        return ToppedUp(key, acting.partner, funded, replayed=not new)

    async def _check_daily_ceiling(self, key_id: str, funding_id: str) -> None:
        if await self.repo.funding_recorded(funding_id):
            return  # a retry of a top-up that happened: not a new one
        recent = await self.repo.fundings_since(key_id, _auto_prefix(key_id), int(time.time()) - DAY_S)
        if recent >= self.auto_topup_daily_max:
            raise FailedPrecondition(f"the daily ceiling of {self.auto_topup_daily_max} automatic top-ups is reached")

    async def _record_auto_topup_failure(self, key_id: str, reason: str) -> None:
        async with self.repo.locked(key_id) as (_, key):
            key.auto_topup_error, key.auto_topup_error_at = reason[:200], int(time.time())
        await self.events.publish(key, events_pb2.KEY_CHANGE_AUTO_TOPUP_FAILED)

    async def _record_topup(self, key_id: str, funding_id: str, funded: Funded) -> tuple[VirtualKey, bool]:
        """Records a ledger funding on the key once; says whether this call recorded it.
        A funded key can pay again: an exhausted one is revived."""
        async with self.repo.locked(key_id) as (session, key):
            new = await self.repo.record_funding(session, key, funding_id, funded.budget_ucr, funded.fee_ucr)
            if key.status == "exhausted":
                key.status, key.status_reason = "active", ""
            if funding_id.startswith(_auto_prefix(key_id)):
                key.auto_topup_error, key.auto_topup_error_at = "", 0
        return key, new

    # -- revoke ----------------------------------------------------------------------

    async def settle_revoked(self, key: VirtualKey) -> VirtualKey:
        """Returns a revoked key's money to its partner, once (idempotent)."""
        if key.settled_on_revoke:
            return key
        if key.kind == "partner":
            amount = await self.funding.refund(f"refund:{key.id}", key.partner_id, key.id)
        else:
            amount = await self.funding.release_deposit(f"release:{key.id}", key.partner_id, key.id)
        async with self.repo.locked(key.id) as (_, row):
            if not row.settled_on_revoke:
                row.settled_on_revoke = True
                row.refunded_ucr = amount if key.kind == "partner" else 0
        return row

    # -- convergence without a client retry -------------------------------------------

    async def reconcile(self, stale_after_s: int = 60) -> int:
        """Finishes what a crash left half done. Ledger calls time out in seconds, so a
        ``provisioning`` row this old has no call in flight."""
        revoked = await self.repo.unsettled_revoked()
        stuck = await self.repo.provisioning_before(int(time.time()) - stale_after_s)
        for key in revoked:
            await self.settle_revoked(key)
        for key in stuck:
            await self.finish_provisioning(key)
        return len(revoked) + len(stuck)

    async def finish_provisioning(self, key: VirtualKey) -> None:
        """A ``provisioning`` row no client retried is activated when the ledger shows its
        funding (or deposit) happened, marked failed when it did not."""
        account = key_account(key.id) if key.kind == "partner" else deposit_account(key.id)
        balance = await self.funding.balance(account)
        if balance is None:
            await transitions.set_status(self.repo, key.id, "failed", "funding never happened")
            return
        funding_id = _create_funding_id(key.id) if key.kind == "partner" else None
        held = balance.posted_ucr + balance.pending_ucr
        _, shown = await self.activate(key.id, funding_id, Funded(held, 0, held), new_secret())
        if shown:
            log.warning(
                "activated a key whose create was never retried; its secret must be regenerated",
                extra={"key_id": key.id},
            )

    def _fee_rate(self, partner: Partner) -> str:
        return str(self.catalog.fee_rate(partner.tier))
