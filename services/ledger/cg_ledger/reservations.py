"""Two-phase reservations: hold an upper bound, then post the real cost.

A reservation holds on the account paying the provider cost (a key budget or, for a
customer-created key, the partner's balance) and, with customer billing, on the
customer's AI credits, both in one transaction. ``settle`` posts the real cost and
releases the rest; a cost above the hold is taken from what is available, never
more (the shortfall is recorded as unpaid, never a negative balance). ``void``
releases everything; ``expire`` voids holds past their expiry, and a settlement that
arrives after that is still posted, once, from what is available, so usage is never lost.

A closed account (a revoked key, ``Book.refund_key``) takes no new hold. What any
release frees on it — a settlement's rest, a void, an expiry — moves on to its
``closed_to`` in the same transaction, as a ``refund`` transfer with an id derived from
the reservation (``refund:<settle|void|expire>:<request id>``), so once the requests in
flight finish, every credit of a revoked key is back with its partner. The release
statement returns ``closed_to``: an open account costs no extra read.

Each call is one synchronous function of a ``Rows`` run in a transaction off the event
loop (``rows`` says why, ``txrunner`` how), made idempotent by ``idempotent.once``. A
reservation may carry a rate limit (``ratelimits``), checked and counted in the same
transaction. Provider cost is credited to the usage sink's shard of the request id
(``accounts.usage_shard``). A batch of settlements: ``settlebatch``.

(About 400 lines, on purpose: reserve, settle, void and expire share one release rule
and one lock order, and split apart they would drift.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cg_ledger import accounts, idempotent
from cg_ledger.accounts import usage_shard
from cg_ledger.book import FAILED_FUNDS
from cg_ledger.charges import Billing, billing_of, costs, tokens
from cg_ledger.errors import AccountClosed, Conflict, InsufficientFunds, InvalidArgument, NotFound, OutOfRange
from cg_ledger.limits import (
    MAX_MODEL_LEN,
    MAX_PRICE_BOOK_VERSION_LEN,
    MAX_REASON_LEN,
    check_id,
    check_text,
    decimal_or_invalid,
)
from cg_ledger.ratelimits import WINDOW_MS, RateLimit, RateState, evaluate
from cg_ledger.rows import Rows
from cg_ledger.rows import now_ms as clock_ms
from cg_ledger.txrunner import Runner
from cglib.faults import crash_point

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReserveOutcome:
    request_id: str
    held_ucr: int
    customer_held_uai: int
    available_ucr: int
    replayed: bool
    rate: RateState = field(default_factory=RateState)


@dataclass(frozen=True)
class SettleOutcome:
    request_id: str
    held_ucr: int
    charged_ucr: int
    released_ucr: int
    unpaid_ucr: int
    customer_charged_uai: int
    customer_unpaid_uai: int
    price_book_version: str
    replayed: bool


class RateLimited(Exception):
    """Internal: the window is full; the transaction is rolled back, nothing is stored."""

    def __init__(self, state: RateState) -> None:
        super().__init__(state.limited_by)
        self.state = state


def _release(db: Rows, account: str, held: int, posted: int, idem: str, request_id: str) -> None:
    """Frees a hold of ``held``, posting ``posted`` of it; on a closed account what was
    freed moves on to ``closed_to`` at once (the account was left with nothing else)."""
    closed_to = db.release(account, held, posted)
    freed = held - posted
    if not closed_to or freed <= 0:
        return
    if not db.debit(account, freed):
        raise Conflict(f"account {account!r} changed under a locked release")  # cannot happen
    if not db.credit(closed_to, freed):
        raise OutOfRange(f"{closed_to}: its credits would pass the 64-bit range")
    db.insert_transfer(
        idem, "refund", account, closed_to, freed, request_id=request_id, memo="released hold of a closed account"
    )


def settled_values(
    paid: int, charge: int, paid_uai: int, charge_uai: int, usage_source: str, input_tokens: int, output_tokens: int
) -> dict:
    """What a settlement stores on its reservation row (``sql``'s ``settled``)."""
    return dict(
        charged_ucr=paid,
        unpaid_ucr=charge - paid,
        customer_charged_uai=paid_uai,
        customer_unpaid_uai=charge_uai - paid_uai,
        usage_source=usage_source,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def settle_memo(r, usage_source: str, input_tokens: int, output_tokens: int) -> str:
    """The provenance a settlement's transfers carry: usage source, tokens, price book."""
    return f"{usage_source} usage {input_tokens}+{output_tokens} tokens, prices {r.price_book_version}"


def settle_outcome(r, replayed: bool, held: int | None = None, values: dict | None = None) -> SettleOutcome:
    """A settlement's outcome from its reservation row (a replay), or from what it just
    stored (``values``, ``settled_values``) and the hold it released (``held``)."""
    v = values or {}
    charged = v.get("charged_ucr", r.charged_ucr)
    h = r.held_ucr if held is None else held
    return SettleOutcome(
        request_id=r.request_id,
        held_ucr=h,
        charged_ucr=charged,
        released_ucr=max(h - charged, 0),
        unpaid_ucr=v.get("unpaid_ucr", r.unpaid_ucr),
        customer_charged_uai=v.get("customer_charged_uai", r.customer_charged_uai),
        customer_unpaid_uai=v.get("customer_unpaid_uai", r.customer_unpaid_uai),
        price_book_version=r.price_book_version,
        replayed=replayed,
    )


class Reservations:
    def __init__(self, db: Runner, default_ttl_s: int = 600) -> None:
        self.db = db
        self.default_ttl_s = default_ttl_s
        self.known_sinks: set[str] = set()  # credit sinks known to exist (never deleted; settlebatch too)

    async def reserve(
        self,
        request_id: str,
        account: str,
        model: str,
        input_usd_per_mtok: str,
        output_usd_per_mtok: str,
        price_book_version: str,
        max_input_tokens: int,
        max_output_tokens: int,
        ttl_s: int = 0,
        billing: Billing | None = None,
        rate_limit: RateLimit | None = None,
    ) -> ReserveOutcome:
        check_id(request_id, "request_id")
        payer = accounts.parse(account, kinds={"key", "partner"})
        check_text(model, "model", MAX_MODEL_LEN)
        check_text(price_book_version, "price.price_book_version", MAX_PRICE_BOOK_VERSION_LEN)
        in_price = decimal_or_invalid(input_usd_per_mtok, "price.input_usd_per_mtok")
        out_price = decimal_or_invalid(output_usd_per_mtok, "price.output_usd_per_mtok")
        tokens(max_input_tokens, "max_input_tokens")
        tokens(max_output_tokens, "max_output_tokens")
        if ttl_s < 0 or ttl_s > 7 * 24 * 3600:
            raise InvalidArgument("ttl_seconds: between 0 and one week")
        held, held_uai = costs(str(in_price), str(out_price), billing, max_input_tokens, max_output_tokens, "hold")
        row = dict(
            request_id=request_id,
            account=payer.id,
            credit_account=usage_shard(request_id),
            model=model,
            input_usd_per_mtok=str(in_price),
            output_usd_per_mtok=str(out_price),
            price_book_version=price_book_version,
            held_ucr=held,
            customer_account=billing.customer_account if billing else "",
            revenue_account=billing.revenue_account if billing else "",
            profit_multiplier=str(billing.terms.profit_multiplier) if billing else "",
            price_per_ai_credit_cents=str(billing.terms.price_per_ai_credit_cents) if billing else "",
            floor_usd_per_mtok=str(billing.terms.floor_usd_per_mtok) if billing else "",
            customer_held_uai=held_uai,
            rate_key=rate_limit.key if rate_limit else "",
        )
        ttl_ms = (ttl_s or self.default_ttl_s) * 1000
        try:
            out = await idempotent.once(
                self.db,
                lambda db: self._reserve(db, row, billing, rate_limit, ttl_ms),
                lambda db: self._store_refusal(db, row),
                lambda db: self._after_conflict(db, request_id, payer.id),
            )
        except RateLimited as limited:
            return ReserveOutcome(request_id, 0, 0, 0, replayed=False, rate=limited.state)
        if not out.replayed:
            crash_point("reserve:after_commit")
        return out

    @staticmethod
    def _reserve(
        db: Rows, row: dict, billing: Billing | None, rate_limit: RateLimit | None, ttl_ms: int
    ) -> ReserveOutcome:
        request_id, payer, held, held_uai = row["request_id"], row["account"], row["held_ucr"], row["customer_held_uai"]
        # With a rate limit, lock the payer first: every reservation of the key waits here,
        # and a concurrent duplicate of this id then sees it reserved (a replay, not "limited").
        available, closed_to = db.state(payer, lock=rate_limit is not None)
        existing = db.reservation(request_id)
        if existing is not None:
            return Reservations._replay(db, existing, payer)
        if db.transfer(f"reserve:{request_id}") is not None:
            raise InsufficientFunds(f"request {request_id!r} was refused before")
        if closed_to:
            raise AccountClosed(f"account {payer!r} is closed (the key was revoked)")
        now = clock_ms()
        rate = RateState()
        if rate_limit is not None:
            rate = evaluate(rate_limit, db.window(rate_limit.key, now - WINDOW_MS), now)
            if rate.limited:
                raise RateLimited(rate)
        if not db.hold(payer, held):
            if db.state(payer)[1]:  # closed since we looked (PostgreSQL, without the lock)
                raise AccountClosed(f"account {payer!r} is closed (the key was revoked)")
            raise InsufficientFunds(f"account {payer!r} has {available} available, needs {held}")
        if billing is not None:
            have = db.available(billing.customer_account)
            if not db.hold(billing.customer_account, held_uai):
                raise InsufficientFunds(f"customer has {have} uai available, needs {held_uai}")
        db.insert_reservation(**row, expires_at_ms=now + ttl_ms, created_at_ms=now)
        db.insert_transfer(
            f"reserve:{request_id}",
            "pending",
            payer,
            row["credit_account"],
            held,
            request_id=request_id,
            memo=row["model"],
        )
        if billing is not None:
            db.insert_transfer(
                f"reserve:{request_id}:customer",
                "pending",
                billing.customer_account,
                billing.revenue_account,
                held_uai,
                request_id=request_id,
                memo=row["model"],
            )
        crash_point("reserve:before_commit")
        return ReserveOutcome(request_id, held, held_uai, available - held, replayed=False, rate=rate)

    @staticmethod
    def _store_refusal(db: Rows, row: dict) -> None:
        request_id = row["request_id"]
        if db.reservation(request_id) is not None:
            return  # a concurrent call with this id succeeded; that outcome stands
        if db.transfer(f"reserve:{request_id}") is None:
            db.insert_transfer(
                f"reserve:{request_id}",
                "pending",
                row["account"],
                row["credit_account"],
                row["held_ucr"],
                request_id=request_id,
                outcome=FAILED_FUNDS,
            )

    @staticmethod
    def _after_conflict(db: Rows, request_id: str, account: str) -> ReserveOutcome:
        """A concurrent call with the same id won the insert: replay its outcome."""
        existing = db.reservation(request_id)
        if existing is None:
            if db.transfer(f"reserve:{request_id}") is not None:
                raise InsufficientFunds(f"request {request_id!r} was refused")
            raise Conflict(f"request id {request_id!r} is being reserved concurrently")
        return Reservations._replay(db, existing, account)

    @staticmethod
    def _replay(db: Rows, row, account: str) -> ReserveOutcome:
        if row.account != account or row.kind != "request":
            raise Conflict(f"request id {row.request_id!r} was reserved on another account (or is a lease)")
        return ReserveOutcome(row.request_id, row.held_ucr, row.customer_held_uai, db.available(account), replayed=True)

    async def settle(self, request_id: str, input_tokens: int, output_tokens: int, usage_source: str) -> SettleOutcome:
        check_id(request_id, "request_id")
        tokens(input_tokens, "input_tokens")
        tokens(output_tokens, "output_tokens")
        out = await self.db.run(self._settle, request_id, input_tokens, output_tokens, usage_source)
        crash_point("settle:after_commit")
        return out

    def _credit_sink(self, db: Rows, account: str, amount: int) -> None:
        """Credits a credit-only sink, creating it the first time. The cache of sinks known
        to exist only saves the INSERT: a credit that finds no row (the transaction that
        created it rolled back after all) creates it and credits again; one that still
        finds nothing to update would take the sink past int64."""
        if account not in self.known_sinks:
            db.ensure_account(accounts.parse(account))
        if not db.credit(account, amount):
            db.ensure_account(accounts.parse(account))
            if not db.credit(account, amount):
                raise OutOfRange(f"{account}: its credits would pass the 64-bit range")
        self.known_sinks.add(account)

    def _settle(
        self, db: Rows, request_id: str, input_tokens: int, output_tokens: int, usage_source: str
    ) -> SettleOutcome:
        r = db.reservation(request_id, lock=True)
        if r is None:
            raise NotFound(f"reservation {request_id!r} not found")
        if r.kind == "lease":
            raise Conflict(f"{request_id!r} is a lease: its requests settle with SettleLeased")
        if r.status == "posted":
            return settle_outcome(r, replayed=True)
        if r.status == "voided":
            raise Conflict(f"reservation {request_id!r} was voided")
        billing = billing_of(r)
        charge, charge_uai = costs(r.input_usd_per_mtok, r.output_usd_per_mtok, billing, input_tokens, output_tokens)
        pending = r.status == "pending"  # an expired hold was already released
        held = r.held_ucr if pending else 0
        held_uai = r.customer_held_uai if pending else 0
        paid = self._post(db, r.account, held, charge, f"refund:settle:{request_id}", request_id)
        paid_uai = 0
        if billing:
            paid_uai = self._post(
                db, r.customer_account, held_uai, charge_uai, f"refund:settle:{request_id}:customer", request_id
            )
        # credit-only sinks last: they are the hottest rows
        sink = usage_shard(request_id)
        self._credit_sink(db, sink, paid)
        if billing:
            self._credit_sink(db, billing.revenue_account, paid_uai)
        values = settled_values(paid, charge, paid_uai, charge_uai, usage_source, input_tokens, output_tokens)
        db.mark_settled(request_id, **values)
        memo = settle_memo(r, usage_source, input_tokens, output_tokens)
        db.insert_transfer(f"settle:{request_id}", "post", r.account, sink, paid, request_id=request_id, memo=memo)
        if billing:
            db.insert_transfer(
                f"settle:{request_id}:customer",
                "post",
                r.customer_account,
                billing.revenue_account,
                paid_uai,
                request_id=request_id,
                memo=memo,
            )
        crash_point("settle:before_commit")
        return settle_outcome(r, replayed=False, held=held, values=values)

    @staticmethod
    def _post(db: Rows, account: str, held: int, charge: int, refund_idem: str, request_id: str) -> int:
        """Posts ``charge`` against a hold of ``held``; returns what was actually paid."""
        from_hold = min(charge, held)
        _release(db, account, held, from_hold, refund_idem, request_id)
        extra = charge - from_hold
        if extra <= 0:
            return from_hold
        take = min(extra, max(db.available(account, lock=True), 0))
        if take and not db.debit(account, take):
            raise Conflict("account changed under a locked settlement")  # cannot happen
        return from_hold + take

    @staticmethod
    def _release_all(db: Rows, r, kind: str, reason: str) -> None:
        rid = r.request_id
        _release(db, r.account, r.held_ucr, 0, f"refund:{kind}:{rid}", rid)
        if r.customer_account:
            _release(db, r.customer_account, r.customer_held_uai, 0, f"refund:{kind}:{rid}:customer", rid)
        db.set_status(rid, "voided" if kind == "void" else "expired")
        db.insert_transfer(f"{kind}:{rid}", kind, r.account, r.credit_account, r.held_ucr, request_id=rid, memo=reason)

    async def void(self, request_id: str, reason: str = "") -> tuple[int, bool]:
        """Releases a pending hold. Returns ``(released_ucr, replayed)``."""
        check_id(request_id, "request_id")
        check_text(reason, "reason", MAX_REASON_LEN)
        return await self.db.run(self._void, request_id, reason)

    @classmethod
    def _void(cls, db: Rows, request_id: str, reason: str) -> tuple[int, bool]:
        r = db.reservation(request_id, lock=True)
        if r is None:
            raise NotFound(f"reservation {request_id!r} not found")
        if r.kind == "lease":
            raise Conflict(f"{request_id!r} is a lease: ReleaseLease frees it")
        if r.status == "voided":
            return r.held_ucr, True
        if r.status != "pending":
            raise Conflict(f"reservation {request_id!r} is {r.status}")
        cls._release_all(db, r, "void", reason)
        return r.held_ucr, False

    async def expire(self, now_ms: int = 0, limit: int = 500) -> tuple[int, int]:
        """Voids pending reservations past their expiry. Safe on many replicas at once:
        each row is re-checked under its lock. Returns ``(count, released_ucr)``."""
        now = now_ms or clock_ms()
        due = await self.db.run(lambda db: db.due(now, min(max(limit, 1), 5000)))
        count = released = 0
        for request_id in due:
            try:
                held = await self.db.run(self._expire_one, request_id, now)
            except OutOfRange:  # its partner's credits are at the int64 edge: the others still expire
                log.exception("reservation not expired", extra={"request_id": request_id})
                continue
            if held is not None:
                count += 1
                released += held
        return count, released

    @classmethod
    def _expire_one(cls, db: Rows, request_id: str, now: int) -> int | None:
        r = db.reservation(request_id, lock=True)
        if r is None or r.status != "pending" or r.expires_at_ms > now:
            return None
        cls._release_all(db, r, "expire", "reservation expired")
        return r.held_ucr
