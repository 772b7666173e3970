"""Budget leases (docs/leases.md): a proxy worker's hold on a payer, reserved against
locally, settled from in batches.

A lease is a ``reservations`` row of kind ``lease``: a pending hold on the payer (a key's
budget, or the partner's balance for a customer-created key) and, when the key bills a
customer, on the customer's AI credits, with the billing terms its settlements charge
at. Its ``held_ucr`` / ``customer_held_uai`` are what it holds *now*: every change of the
hold changes them in the same transaction, so the audit's rule (an account's pending
debits are its pending rows' holds) holds for leases as for requests, and the expirer
frees an expired lease as it frees an expired reservation.

- ``acquire`` holds ``min(want, available // LEASE_FRACTION)``, at least ``least`` (one
  request's bound, which stays grantable to the last credit), else ``InsufficientFunds``
  (stored: the id fails alike on a replay). Idempotent on the lease id.
- ``extend`` adds to an open lease by the same rule and moves its expiry; idempotent on
  its extension id (a ``pending`` transfer records each growth).
- ``release`` frees the hold down to ``keep`` (what the worker's requests in flight still
  need); ``keep = 0`` closes the lease. Idempotent on its release id (a ``void`` transfer).
  On a closed account (a revoked key) what is freed moves on to its ``closed_to``.
- ``settle`` posts requests' real cost from their leases: per request a ``reservations``
  row of kind ``request`` (posted at once, ``lease_id`` set, its ``held_ucr`` the part of
  the lease it used) and the ``settle:<request id>`` transfers, as a reserved request
  would have. The request id is the idempotency key: a request seen before answers its
  stored outcome. A cost above what the lease still holds (it expired or was released
  under the request: a worker that restarted late) is taken from what is available and
  the rest recorded as unpaid, as for a settlement after its hold expired. A batch is one
  transaction with one write per account, lease and sink; if a write fails (an account at
  the int64 edge) every settlement runs again on its own, so one fails alone.

An extension's or a release's id replays only that change of that lease (its transfer's
kind and lease): used again for another lease, or for the other operation, it is a
``Conflict``. Crash points (``cglib.faults``): ``acquire_lease:``, ``extend_lease:``,
``release_lease:`` ``before_commit`` / ``after_commit``, ``settle_leased:mid_batch``,
``:before_commit``, ``:after_commit``.

Request slots (a rate-limited key, ``ratelimits``): ``acquire`` and ``extend`` given the
key's ``RateLimit`` and ``(want, least)`` requests also grant ``k`` request slots in the
same transaction, by the window rule a reservation obeys (under the payer's lock, as a
rate-limited ``Reserve``), recorded as a ``rate_slots`` row (id: the lease's or the
extension's id, so a replay answers the same grant) that counts ``k`` requests in the
key's window until its deadline ``now + SLOT_TTL_MS``. None left: ``k = 0``, the money is
still granted, and the proxy falls back to ``Reserve``, which refuses. ``release`` takes
back unused slots (``return_requests``); ``settle`` records each request in the key's
window at the time it was made, with its tokens and no request (its slot counted it).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from cg_ledger import accounts, idempotent, sql
from cg_ledger.accounts import usage_shard
from cg_ledger.book import FAILED_FUNDS
from cg_ledger.charges import Billing, billing_of, costs, tokens
from cg_ledger.errors import AccountClosed, Conflict, InsufficientFunds, InvalidArgument, LedgerError, NotFound
from cg_ledger.limits import (
    MAX_MODEL_LEN,
    MAX_PRICE_BOOK_VERSION_LEN,
    check_bound,
    check_id,
    check_text,
    decimal_or_invalid,
)
from cg_ledger.ratelimits import SLOT_TTL_MS, WINDOW_MS, RateLimit, RateState, slots
from cg_ledger.reservations import Reservations, SettleOutcome, _release, settle_memo, settle_outcome
from cg_ledger.rows import Rows, now_ms
from cglib.faults import crash_point

log = logging.getLogger(__name__)

# A grant is at most this fraction of what the payer has available: many workers (and
# replicas) leasing one key each take a shrinking share, and the rest stays for others.
LEASE_FRACTION = 8
MAX_TTL_S = 3600
LEASE = "lease"
# A release's transfer memo when it gave back unused request slots (a replay answers them).
_SLOTS_BACK = "lease released, requests returned: "


@dataclass(frozen=True)
class LeaseOutcome:
    lease_id: str
    held_ucr: int
    held_uai: int
    expires_at_ms: int
    status: str  # open | closed | expired
    changed_ucr: int  # what this call added (acquire, extend) or freed (release)
    changed_uai: int
    replayed: bool
    # request slots this call granted (acquire, extend) or took back (release), usable
    # until slots_end_ms; the key's window as of the grant, for x-ratelimit-*
    slots: int = 0
    slots_end_ms: int = 0
    rate: RateState | None = None


@dataclass(frozen=True)
class SlotRequest:
    """A rate-limited key's slots wanted with a lease: ``want``, at least ``least``."""

    limit: RateLimit
    want: int
    least: int

    @classmethod
    def of(cls, limit: RateLimit | None, want: int, least: int) -> SlotRequest | None:
        if want < 0 or least < 0 or want > 10_000 or least > want:
            raise InvalidArgument("want_requests, min_requests: 0 <= min <= want <= 10000")
        return cls(limit, want, least) if limit is not None and want else None


@dataclass(frozen=True)
class LeasedSettlement:
    lease_id: str
    request_id: str
    model: str
    input_usd_per_mtok: str
    output_usd_per_mtok: str
    price_book_version: str
    input_tokens: int
    output_tokens: int
    usage_source: str
    requested_at_ms: int = 0  # when the request was made (0: now); its tokens count in the window from then


def _status(row: Any) -> str:
    return {"pending": "open", "closed": "closed", "expired": "expired"}.get(row.status, row.status)


def _outcome(
    row: Any, changed: tuple[int, int], replayed: bool, granted: tuple[int, int, RateState | None] = (0, 0, None)
) -> LeaseOutcome:
    return LeaseOutcome(
        row.request_id,
        row.held_ucr,
        row.customer_held_uai,
        row.expires_at_ms,
        _status(row),
        changed[0],
        changed[1],
        replayed,
        *granted,
    )


def _grant_slots(db: Rows, grant_id: str, lease_id: str, want: SlotRequest | None, now: int) -> tuple:
    """Grants the lease request slots by the window rule (the payer locked: every window
    decision of the key waits on it); ``(k, end_ms, state)``."""
    if want is None:
        return 0, 0, None
    k, state = slots(want.limit, db.window(want.limit.key, now - WINDOW_MS), now, want.want, want.least)
    end = now + SLOT_TTL_MS
    if k:
        db.insert_slots(grant_id, want.limit.key, lease_id, k, end, now)
    return k, (end if k else 0), state


def _replayed_slots(db: Rows, grant_id: str) -> tuple:
    k, end = db.slots(grant_id)
    return k, end, None


def grant(available: int, want: int, least: int) -> int:
    """What a lease gets of ``available``: ``want``, at most a fraction of what is there,
    at least ``least``; ``InsufficientFunds`` when not even ``least`` is available."""
    amount = min(want, max(available, 0) // LEASE_FRACTION)
    if amount >= least:
        return amount
    if available >= least:
        return least
    raise InsufficientFunds(f"{available} available, a lease needs at least {least}")


def _amounts(want: int, least: int, what: str) -> tuple[int, int]:
    check_bound(want, f"want_{what}")
    check_bound(least, f"min_{what}")
    if want < 0 or least < 0:
        raise InvalidArgument(f"want_{what}, min_{what}: zero or more")
    return max(want, least), least


def _ttl_ms(ttl_s: int) -> int:
    if ttl_s <= 0 or ttl_s > MAX_TTL_S:
        raise InvalidArgument(f"ttl_seconds: between 1 and {MAX_TTL_S}")
    return ttl_s * 1000


def _error(e: BaseException) -> Exception:
    return e if isinstance(e, Exception) else RuntimeError(repr(e))


def _names(t: Any, kind: str, lease_id: str) -> bool:
    """Whether a stored transfer is this kind of change of this lease: an extension's or a
    release's id seen again for another lease, or for the other operation, is a conflict,
    not a replay (only comparing the payer let it pass on a second lease of the same key)."""
    return bool(t.kind == kind and t.request_id == lease_id)


def _transfer_amount(db: Rows, idem: str) -> int:
    t = db.transfer(idem)
    return int(t.amount_ucr) if t is not None else 0


class Leases:
    def __init__(self, reservations: Reservations) -> None:
        self.reservations = reservations
        self.db = reservations.db

    # -- acquire, extend, release --------------------------------------------------------

    async def acquire(
        self,
        lease_id: str,
        account: str,
        billing: Billing | None,
        want: tuple[int, int],
        least: tuple[int, int],
        ttl_s: int,
        want_slots: SlotRequest | None = None,
    ) -> LeaseOutcome:
        check_id(lease_id, "lease_id")
        payer = accounts.parse(account, kinds={"key", "partner"}).id
        want_ucr, least_ucr = _amounts(want[0], least[0], "ucr")
        want_uai, least_uai = _amounts(want[1], least[1], "uai") if billing else (0, 0)
        ttl_ms = _ttl_ms(ttl_s)
        out = await idempotent.once(
            self.db,
            lambda db: self._acquire(
                db, lease_id, payer, billing, (want_ucr, want_uai), (least_ucr, least_uai), ttl_ms, want_slots
            ),
            lambda db: self._store_refusal(db, lease_id, payer),
            lambda db: self._replay_acquire(db, lease_id, payer),
        )
        if not out.replayed:
            crash_point("acquire_lease:after_commit")
        return out

    @staticmethod
    def _acquire(
        db: Rows,
        lease_id: str,
        payer: str,
        billing: Billing | None,
        want: tuple[int, int],
        least: tuple[int, int],
        ttl_ms: int,
        want_slots: SlotRequest | None = None,
    ) -> LeaseOutcome:
        if db.reservation(lease_id) is not None or db.transfer(f"reserve:{lease_id}") is not None:
            return Leases._replay_acquire(db, lease_id, payer)
        available, closed_to = db.state(payer, lock=True)
        if closed_to:
            raise AccountClosed(f"account {payer!r} is closed (the key was revoked)")
        held = grant(available, want[0], least[0])
        held_uai = 0
        if billing is not None:
            held_uai = grant(db.available(billing.customer_account, lock=True), want[1], least[1])
        if not db.hold(payer, held):
            raise InsufficientFunds(f"account {payer!r} changed under a locked lease")  # cannot happen
        if billing is not None and not db.hold(billing.customer_account, held_uai):
            raise InsufficientFunds("the customer's account changed under a locked lease")  # cannot happen
        now = now_ms()
        db.insert_reservation(
            request_id=lease_id,
            account=payer,
            credit_account=usage_shard(lease_id),
            model=LEASE,
            input_usd_per_mtok="0",
            output_usd_per_mtok="0",
            price_book_version="",
            held_ucr=held,
            customer_account=billing.customer_account if billing else "",
            revenue_account=billing.revenue_account if billing else "",
            profit_multiplier=str(billing.terms.profit_multiplier) if billing else "",
            price_per_ai_credit_cents=str(billing.terms.price_per_ai_credit_cents) if billing else "",
            floor_usd_per_mtok=str(billing.terms.floor_usd_per_mtok) if billing else "",
            customer_held_uai=held_uai,
            rate_key=want_slots.limit.key if want_slots else "",
            kind=LEASE,
            expires_at_ms=now + ttl_ms,
            created_at_ms=now,
        )
        db.insert_transfer(f"reserve:{lease_id}", "pending", payer, usage_shard(lease_id), held, lease_id, LEASE)
        if billing is not None:
            db.insert_transfer(
                f"reserve:{lease_id}:customer",
                "pending",
                billing.customer_account,
                billing.revenue_account,
                held_uai,
                lease_id,
                LEASE,
            )
        granted = _grant_slots(db, lease_id, lease_id, want_slots, now)
        lease = db.reservation(lease_id)
        crash_point("acquire_lease:before_commit")  # the hold and the lease are written, not committed
        return _outcome(lease, (held, held_uai), replayed=False, granted=granted)

    @staticmethod
    def _store_refusal(db: Rows, lease_id: str, payer: str) -> None:
        if db.reservation(lease_id) is None and db.transfer(f"reserve:{lease_id}") is None:
            db.insert_transfer(
                f"reserve:{lease_id}", "pending", payer, usage_shard(lease_id), 0, lease_id, LEASE, FAILED_FUNDS
            )

    @staticmethod
    def _replay_acquire(db: Rows, lease_id: str, payer: str) -> LeaseOutcome:
        lease = db.reservation(lease_id)
        if lease is None:
            if db.transfer(f"reserve:{lease_id}") is not None:
                raise InsufficientFunds(f"lease {lease_id!r} was refused")
            raise Conflict(f"lease {lease_id!r} is being acquired concurrently")
        if lease.kind != LEASE or lease.account != payer:
            raise Conflict(f"id {lease_id!r} is used by another reservation or lease")
        changed = (_transfer_amount(db, f"reserve:{lease_id}"), _transfer_amount(db, f"reserve:{lease_id}:customer"))
        return _outcome(lease, changed, replayed=True, granted=_replayed_slots(db, lease_id))

    async def extend(
        self,
        extension_id: str,
        lease_id: str,
        want: tuple[int, int],
        least: tuple[int, int],
        ttl_s: int,
        want_slots: SlotRequest | None = None,
    ) -> LeaseOutcome:
        check_id(extension_id, "extension_id")
        check_id(lease_id, "lease_id")
        want_ucr, least_ucr = _amounts(want[0], least[0], "ucr")
        want_uai, least_uai = _amounts(want[1], least[1], "uai")
        ttl_ms = _ttl_ms(ttl_s)
        out = await idempotent.once(
            self.db,
            lambda db: self._extend(
                db, extension_id, lease_id, (want_ucr, want_uai), (least_ucr, least_uai), ttl_ms, want_slots
            ),
            lambda db: self._store_extension_refusal(db, extension_id, lease_id),
            lambda db: self._replay_extension(db, extension_id, lease_id),
        )
        if not out.replayed:
            crash_point("extend_lease:after_commit")
        return out

    @staticmethod
    def _lease(db: Rows, lease_id: str, lock: bool = False) -> Any:
        lease = db.reservation(lease_id, lock=lock)
        if lease is None or lease.kind != LEASE:
            raise NotFound(f"lease {lease_id!r} not found")
        return lease

    @classmethod
    def _extend(
        cls,
        db: Rows,
        extension_id: str,
        lease_id: str,
        want: tuple[int, int],
        least: tuple[int, int],
        ttl_ms: int,
        want_slots: SlotRequest | None = None,
    ) -> LeaseOutcome:
        lease = cls._lease(db, lease_id, lock=True)
        if db.transfer(extension_id) is not None:
            return cls._replay_extension(db, extension_id, lease_id)
        now = now_ms()
        if lease.status != "pending" or lease.expires_at_ms <= now:
            raise InsufficientFunds(f"lease {lease_id!r} is no longer open")
        available, closed_to = db.state(lease.account, lock=True)
        if closed_to:
            raise AccountClosed(f"account {lease.account!r} is closed (the key was revoked)")
        if want_slots is not None and want_slots.limit.key != lease.rate_key:
            raise InvalidArgument(f"rate_limit.key: lease {lease_id!r} was taken for {lease.rate_key!r}")
        add = grant(available, want[0], least[0]) if want[0] else 0
        add_uai = 0
        if lease.customer_account and want[1]:
            add_uai = grant(db.available(lease.customer_account, lock=True), want[1], least[1])
        if add and not db.hold(lease.account, add):
            raise InsufficientFunds(f"account {lease.account!r} changed under a locked lease")  # cannot happen
        if add_uai and not db.hold(lease.customer_account, add_uai):
            raise InsufficientFunds("the customer's account changed under a locked lease")  # cannot happen
        db.run_named("lease_held", rid=lease_id, ucr=add, uai=add_uai)
        db.run_named("lease_expiry", rid=lease_id, expires=now + ttl_ms)
        db.insert_transfer(extension_id, "pending", lease.account, lease.credit_account, add, lease_id, "lease grows")
        if lease.customer_account:
            db.insert_transfer(
                f"{extension_id}:customer",
                "pending",
                lease.customer_account,
                lease.revenue_account,
                add_uai,
                lease_id,
                "lease grows",
            )
        granted = _grant_slots(db, extension_id, lease_id, want_slots, now)
        crash_point("extend_lease:before_commit")
        return _outcome(cls._lease(db, lease_id), (add, add_uai), replayed=False, granted=granted)

    @staticmethod
    def _store_extension_refusal(db: Rows, extension_id: str, lease_id: str) -> None:
        lease = db.reservation(lease_id)
        if lease is not None and db.transfer(extension_id) is None:
            db.insert_transfer(
                extension_id, "pending", lease.account, lease.credit_account, 0, lease_id, LEASE, FAILED_FUNDS
            )

    @classmethod
    def _replay_extension(cls, db: Rows, extension_id: str, lease_id: str) -> LeaseOutcome:
        t = db.transfer(extension_id)
        if t is None:
            raise Conflict(f"extension {extension_id!r} is being made concurrently")
        lease = cls._lease(db, lease_id)
        if not _names(t, "pending", lease_id):
            raise Conflict(f"id {extension_id!r} was used for another lease or operation")
        if t.outcome != "ok":
            raise InsufficientFunds(f"extension {extension_id!r} was refused")
        changed = (int(t.amount_ucr), _transfer_amount(db, f"{extension_id}:customer"))
        return _outcome(lease, changed, replayed=True, granted=_replayed_slots(db, extension_id))

    async def release(
        self, release_id: str, lease_id: str, keep: tuple[int, int], return_requests: int = 0
    ) -> LeaseOutcome:
        check_id(release_id, "release_id")
        check_id(lease_id, "lease_id")
        if keep[0] < 0 or keep[1] < 0 or return_requests < 0:
            raise InvalidArgument("keep_ucr, keep_uai, return_requests: zero or more")
        out = await self.db.run(self._release, release_id, lease_id, keep, return_requests)
        if not out.replayed:
            crash_point("release_lease:after_commit")
        return out

    @classmethod
    def _release(
        cls, db: Rows, release_id: str, lease_id: str, keep: tuple[int, int], return_requests: int = 0
    ) -> LeaseOutcome:
        lease = cls._lease(db, lease_id, lock=True)
        t = db.transfer(release_id)
        if t is not None:
            if not _names(t, "void", lease_id):
                raise Conflict(f"id {release_id!r} was used for another lease or operation")
            back = (int(t.memo[len(_SLOTS_BACK) :]), 0, None) if t.memo.startswith(_SLOTS_BACK) else (0, 0, None)
            return _outcome(lease, (int(t.amount_ucr), _transfer_amount(db, f"{release_id}:customer")), True, back)
        # unused slots given back: fewer requests counted than granted, never more made
        returned = db.return_slots(lease_id, return_requests, now_ms()) if return_requests else 0
        memo = f"{_SLOTS_BACK}{returned}" if returned else "lease released"
        if lease.status != "pending":  # closed or expired: nothing is held any more
            db.insert_transfer(release_id, "void", lease.account, lease.credit_account, 0, lease_id, memo)
            return _outcome(lease, (0, 0), replayed=False, granted=(returned, 0, None))
        free = max(lease.held_ucr - keep[0], 0)
        free_uai = max(lease.customer_held_uai - keep[1], 0) if lease.customer_account else 0
        _release(db, lease.account, free, 0, f"refund:{release_id}", lease_id)
        if lease.customer_account:
            _release(db, lease.customer_account, free_uai, 0, f"refund:{release_id}:customer", lease_id)
        db.run_named("lease_held", rid=lease_id, ucr=-free, uai=-free_uai)
        if keep == (0, 0):
            db.set_status(lease_id, "closed")
        db.insert_transfer(release_id, "void", lease.account, lease.credit_account, free, lease_id, memo)
        if lease.customer_account:
            db.insert_transfer(
                f"{release_id}:customer",
                "void",
                lease.customer_account,
                lease.revenue_account,
                free_uai,
                lease_id,
                "lease released",
            )
        crash_point("release_lease:before_commit")  # freed (and forwarded), not committed
        return _outcome(cls._lease(db, lease_id), (free, free_uai), replayed=False, granted=(returned, 0, None))

    # -- settlements ---------------------------------------------------------------------

    async def settle(self, batch: list[LeasedSettlement]) -> list[SettleOutcome | Exception]:
        """One outcome per settlement, in order: a ``SettleOutcome`` or the error it failed with."""
        outcomes: dict[int, SettleOutcome | Exception] = {}
        valid: dict[int, LeasedSettlement] = {}
        for i, s in enumerate(batch):
            try:
                check_id(s.lease_id, "lease_id")
                check_id(s.request_id, "request_id")
                check_text(s.model, "model", MAX_MODEL_LEN)
                check_text(s.price_book_version, "price.price_book_version", MAX_PRICE_BOOK_VERSION_LEN)
                decimal_or_invalid(s.input_usd_per_mtok, "price.input_usd_per_mtok")
                decimal_or_invalid(s.output_usd_per_mtok, "price.output_usd_per_mtok")
                tokens(s.input_tokens, "input_tokens")
                tokens(s.output_tokens, "output_tokens")
                valid[i] = s
            except LedgerError as e:
                outcomes[i] = e
        if valid:
            try:
                outcomes.update(await self._settle_committed(valid))
            except Exception:
                log.exception("batched lease settlement failed; settling one by one", extra={"count": len(valid)})
                singles = await asyncio.gather(
                    *(self._settle_committed({i: s}) for i, s in valid.items()), return_exceptions=True
                )
                for i, single in zip(valid, singles, strict=True):
                    outcomes[i] = single[i] if isinstance(single, dict) else _error(single)
        if any(isinstance(o, SettleOutcome) and not o.replayed for o in outcomes.values()):
            crash_point("settle_leased:after_commit")
        return [outcomes[i] for i in range(len(batch))]

    async def _settle_committed(self, batch: dict[int, LeasedSettlement]) -> dict[int, SettleOutcome | Exception]:
        outcomes, sinks = await self.db.run(self._settle, batch)
        # only now, committed, do the sinks it created exist for every other transaction: a
        # batch that skipped creating them before would credit rows it cannot see yet
        self.reservations.known_sinks.update(sinks)
        return outcomes

    def _settle(
        self, db: Rows, batch: dict[int, LeasedSettlement]
    ) -> tuple[dict[int, SettleOutcome | Exception], set[str]]:
        leases = {r.request_id: r for r in db.reservations({s.lease_id for s in batch.values()}, lock=True)}
        seen = {r.request_id: r for r in db.reservations(s.request_id for s in batch.values())}
        outcomes: dict[int, SettleOutcome | Exception] = {}
        left: dict[str, list[int]] = {}  # lease id -> [ucr, uai] it still holds, as the batch uses it
        rows: list[dict] = []
        posts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # account -> [from holds, from available]
        spent: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # lease id -> [ucr, uai] used
        sinks: dict[str, int] = defaultdict(int)
        transfers: list[dict] = []
        now = now_ms()
        for i, s in batch.items():
            lease = leases.get(s.lease_id)
            if lease is None or lease.kind != LEASE:
                outcomes[i] = NotFound(f"lease {s.lease_id!r} not found")
                continue
            prior = seen.get(s.request_id)
            if prior is not None:
                if prior.lease_id != s.lease_id:
                    outcomes[i] = Conflict(f"request id {s.request_id!r} was settled otherwise")
                else:
                    outcomes[i] = settle_outcome(prior, replayed=True)
                continue
            billing = billing_of(lease)
            try:
                charge, charge_uai = costs(
                    s.input_usd_per_mtok, s.output_usd_per_mtok, billing, s.input_tokens, s.output_tokens
                )
            except LedgerError as e:
                outcomes[i] = e
                continue
            open_ = lease.status == "pending"
            hold = left.setdefault(
                s.lease_id, [lease.held_ucr if open_ else 0, lease.customer_held_uai if open_ else 0]
            )
            paid, from_hold = self._pay(db, lease.account, charge, hold, 0, posts)
            paid_uai, from_hold_uai = 0, 0
            if billing is not None:
                paid_uai, from_hold_uai = self._pay(db, lease.customer_account, charge_uai, hold, 1, posts)
            spent[s.lease_id][0] += from_hold
            spent[s.lease_id][1] += from_hold_uai
            shard = usage_shard(s.request_id)
            sinks[shard] += paid
            if billing is not None:
                sinks[lease.revenue_account] += paid_uai
            row = dict(
                request_id=s.request_id,
                account=lease.account,
                credit_account=shard,
                model=s.model,
                input_usd_per_mtok=s.input_usd_per_mtok,
                output_usd_per_mtok=s.output_usd_per_mtok,
                price_book_version=s.price_book_version,
                held_ucr=from_hold,
                customer_account=lease.customer_account,
                revenue_account=lease.revenue_account,
                profit_multiplier=lease.profit_multiplier,
                price_per_ai_credit_cents=lease.price_per_ai_credit_cents,
                floor_usd_per_mtok=lease.floor_usd_per_mtok,
                customer_held_uai=from_hold_uai,
                customer_charged_uai=paid_uai,
                customer_unpaid_uai=charge_uai - paid_uai,
                input_tokens=s.input_tokens,
                output_tokens=s.output_tokens,
                charged_ucr=paid,
                unpaid_ucr=charge - paid,
                usage_source=s.usage_source,
                # a limited key's window counts the request's tokens (not the request:
                # its slot did) from when it was made
                created_at_ms=min(s.requested_at_ms, now) if s.requested_at_ms > 0 else now,
                rate_key=lease.rate_key,
                lease_id=s.lease_id,
            )
            rows.append(row)
            seen[s.request_id] = SimpleNamespace(**row, status="posted")
            memo = settle_memo(seen[s.request_id], s.usage_source, s.input_tokens, s.output_tokens)
            rid = s.request_id
            transfers.append(
                sql.new_transfer(f"settle:{rid}", "post", lease.account, shard, paid, rid, memo, "ok", now)
            )
            if billing is not None:
                transfers.append(
                    sql.new_transfer(
                        f"settle:{rid}:customer",
                        "post",
                        lease.customer_account,
                        lease.revenue_account,
                        paid_uai,
                        rid,
                        memo,
                        "ok",
                        now,
                    )
                )
            outcomes[i] = settle_outcome(seen[s.request_id], replayed=False)
        self._write(db, posts, spent, sinks, rows, transfers)
        return outcomes, set(sinks) if rows else set()

    @staticmethod
    def _pay(db: Rows, account: str, charge: int, hold: list[int], unit: int, posts: dict) -> tuple[int, int]:
        """(paid, from the lease's hold): the hold first, then what the account has
        available (its balance, read under the lease's lock order), never more."""
        from_hold = min(charge, hold[unit])
        hold[unit] -= from_hold
        paid = from_hold
        extra = charge - from_hold
        if extra > 0:
            have = max(db.available(account, lock=True) - posts[account][1], 0)
            take = min(extra, have)
            posts[account][1] += take
            paid += take
        posts[account][0] += from_hold
        return paid, from_hold

    def _write(
        self,
        db: Rows,
        posts: dict[str, list[int]],
        spent: dict[str, list[int]],
        sinks: dict[str, int],
        rows: list[dict],
        transfers: list[dict],
    ) -> None:
        if not rows:
            return
        releases = [sql.release(a, h, h).params for a, (h, _) in sorted(posts.items()) if h]
        if db.many("release", releases) != len(releases):
            raise Conflict("a payer changed under a locked lease settlement")  # cannot happen
        for account, (_, extra) in sorted(posts.items()):
            if extra and not db.debit(account, extra):
                raise Conflict(f"account {account!r} changed under a locked lease settlement")  # cannot happen
        db.many("lease_held", [dict(rid=lid, ucr=-u, uai=-a) for lid, (u, a) in sorted(spent.items()) if u or a])
        crash_point("settle_leased:mid_batch")  # payers charged, leases shrunk; sinks, rows, journal not yet
        known = self.reservations.known_sinks
        new = [sql.new_account(accounts.parse(a), now_ms()) for a in sorted(sinks) if a not in known]
        db.many("ensure_account", new)
        credits = [sql.credit(a, amount).params for a, amount in sorted(sinks.items()) if amount]
        if db.many("credit", credits) != len(credits):
            raise OverflowError("a sink would pass the 64-bit range")  # every settlement then runs on its own
        db.many("insert_leased", rows)
        db.many("insert_transfer", transfers)
        crash_point("settle_leased:before_commit")
