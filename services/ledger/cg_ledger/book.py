"""Ledger operations. Each is one database transaction and is safe to retry.

Errors (all ``LedgerError``):

- ``InvalidArgument``: the request is malformed; nothing was written.
- ``NotFound``: an account or reservation does not exist.
- ``InsufficientFunds``: the debit account cannot cover the amount.
- ``Conflict``: an idempotency id was reused with other fields, or the reservation
  is in a state that forbids the operation (e.g. settling a voided one).

Holds and debits are conditional UPDATEs (``... WHERE available >= amount``), so
concurrent callers can never overdraw a constrained account. Idempotency ids are
unique in ``transfers``; a concurrent duplicate loses the insert, rolls back, and is
answered with the stored outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cg_ledger.models import Account, Reservation, Transfer
from cg_ledger.pricing import MAX_UCR, parse_price, provider_cost_ucr

EXTERNAL = "external"  # where deposits come from; the only account allowed below zero
USAGE_SINK = "platform:usage"  # provider cost of settled usage
ACCOUNT_KINDS = {"partner", "key", "customer", "platform"}

A = Account.__table__
T = Transfer.__table__
R = Reservation.__table__


class LedgerError(Exception):
    pass


class InvalidArgument(LedgerError):
    pass


class NotFound(LedgerError):
    pass


class InsufficientFunds(LedgerError):
    pass


class Conflict(LedgerError):
    pass


@dataclass(frozen=True)
class TransferOutcome:
    transfer_id: int
    idempotency_id: str
    amount_ucr: int
    replayed: bool


@dataclass(frozen=True)
class ReserveOutcome:
    request_id: str
    held_ucr: int
    available_ucr: int
    replayed: bool


@dataclass(frozen=True)
class SettleOutcome:
    request_id: str
    held_ucr: int
    charged_ucr: int
    released_ucr: int
    unpaid_ucr: int
    price_book_version: str
    replayed: bool


@dataclass(frozen=True)
class BalanceView:
    account: str
    posted_ucr: int
    pending_ucr: int
    available_ucr: int


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_amount(amount_ucr: int) -> None:
    if amount_ucr <= 0:
        raise InvalidArgument("amount_ucr: must be positive")
    if amount_ucr > MAX_UCR:
        raise InvalidArgument("amount_ucr: too large")


def _check_account_id(account: str) -> str:
    kind, sep, rest = account.partition(":")
    if not sep or kind not in ACCOUNT_KINDS or not rest or len(account) > 80:
        raise InvalidArgument(f"account: expected <{'|'.join(sorted(ACCOUNT_KINDS))}>:<id>, got {account!r}")
    return kind


def _check_id(value: str, field: str) -> None:
    if not value or len(value) > 120:
        raise InvalidArgument(f"{field}: required, at most 120 characters")


class Book:
    def __init__(self, engine: AsyncEngine, default_ttl_s: int = 600) -> None:
        self.engine = engine
        self.default_ttl_s = default_ttl_s

    # -- helpers --------------------------------------------------------------

    async def _ensure_account(self, conn: AsyncConnection, account: str, kind: str, constrained: bool = True) -> None:
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(A)
        await conn.execute(
            insert.values(
                id=account,
                kind=kind,
                debits_must_not_exceed_credits=constrained,
                debits_pending=0,
                debits_posted=0,
                credits_pending=0,
                credits_posted=0,
                created_at_ms=_now_ms(),
            ).on_conflict_do_nothing(index_elements=["id"])
        )

    async def _available(self, conn: AsyncConnection, account: str, lock: bool = False) -> int:
        q = select(A.c.credits_posted - A.c.debits_posted - A.c.debits_pending).where(A.c.id == account)
        if lock:
            q = q.with_for_update()
        value = (await conn.execute(q)).scalar_one_or_none()
        if value is None:
            raise NotFound(f"account {account!r} not found")
        return int(value)

    async def _stored_transfer(self, conn: AsyncConnection, idempotency_id: str):
        return (await conn.execute(select(T).where(T.c.idempotency_id == idempotency_id))).first()

    def _replay_transfer(self, row, kind: str, debit: str, credit: str, amount_ucr: int) -> TransferOutcome:
        if (row.kind, row.debit_account, row.credit_account, row.amount_ucr) != (kind, debit, credit, amount_ucr):
            raise Conflict(f"idempotency id {row.idempotency_id!r} was used for a different transfer")
        return TransferOutcome(row.id, row.idempotency_id, row.amount_ucr, replayed=True)

    async def _debit(self, conn: AsyncConnection, account: str, posted: int = 0, pending: int = 0) -> bool:
        """Adds to an account's debit counters unless that would overdraw it."""
        result = await conn.execute(
            update(A)
            .where(A.c.id == account)
            .where(
                (A.c.debits_must_not_exceed_credits == False)  # noqa: E712
                | (A.c.credits_posted - A.c.debits_posted - A.c.debits_pending >= posted + pending)
            )
            .values(debits_posted=A.c.debits_posted + posted, debits_pending=A.c.debits_pending + pending)
        )
        return result.rowcount == 1

    async def _credit(self, conn: AsyncConnection, account: str, posted: int = 0, pending: int = 0) -> None:
        await conn.execute(
            update(A)
            .where(A.c.id == account)
            .values(credits_posted=A.c.credits_posted + posted, credits_pending=A.c.credits_pending + pending)
        )

    # -- operations -----------------------------------------------------------

    async def deposit(self, idempotency_id: str, account: str, amount_ucr: int, memo: str = "") -> TransferOutcome:
        _check_id(idempotency_id, "idempotency_id")
        kind = _check_account_id(account)
        _check_amount(amount_ucr)
        return await self._post_transfer(idempotency_id, "deposit", EXTERNAL, account, kind, amount_ucr, memo)

    async def transfer(
        self, idempotency_id: str, debit_account: str, credit_account: str, amount_ucr: int, memo: str = ""
    ) -> TransferOutcome:
        _check_id(idempotency_id, "idempotency_id")
        _check_account_id(debit_account)
        kind = _check_account_id(credit_account)
        _check_amount(amount_ucr)
        if debit_account == credit_account:
            raise InvalidArgument("credit_account: must differ from debit_account")
        return await self._post_transfer(idempotency_id, "transfer", debit_account, credit_account, kind, amount_ucr, memo)

    async def _post_transfer(
        self, idempotency_id: str, kind: str, debit: str, credit: str, credit_kind: str, amount_ucr: int, memo: str
    ) -> TransferOutcome:
        try:
            async with self.engine.begin() as conn:
                row = await self._stored_transfer(conn, idempotency_id)
                if row is not None:
                    return self._replay_transfer(row, kind, debit, credit, amount_ucr)
                if debit == EXTERNAL:
                    await self._ensure_account(conn, EXTERNAL, "external", constrained=False)
                else:
                    available = await self._available(conn, debit)
                    if available < amount_ucr:
                        raise InsufficientFunds(f"account {debit!r} has {available} ucr available")
                await self._ensure_account(conn, credit, credit_kind)
                if not await self._debit(conn, debit, posted=amount_ucr):
                    raise InsufficientFunds(f"account {debit!r} cannot cover {amount_ucr} ucr")
                await self._credit(conn, credit, posted=amount_ucr)
                result = await conn.execute(
                    T.insert().values(
                        idempotency_id=idempotency_id,
                        kind=kind,
                        debit_account=debit,
                        credit_account=credit,
                        amount_ucr=amount_ucr,
                        memo=memo[:200],
                        created_at_ms=_now_ms(),
                    )
                )
                return TransferOutcome(result.inserted_primary_key[0], idempotency_id, amount_ucr, replayed=False)
        except IntegrityError:
            # A concurrent call with the same idempotency id committed first.
            async with self.engine.connect() as conn:
                row = await self._stored_transfer(conn, idempotency_id)
            if row is None:
                raise
            return self._replay_transfer(row, kind, debit, credit, amount_ucr)

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
    ) -> ReserveOutcome:
        _check_id(request_id, "request_id")
        _check_account_id(account)
        if max_input_tokens < 0 or max_output_tokens < 0:
            raise InvalidArgument("max_input_tokens, max_output_tokens: must be non-negative")
        try:
            in_price = parse_price(input_usd_per_mtok, "price.input_usd_per_mtok")
            out_price = parse_price(output_usd_per_mtok, "price.output_usd_per_mtok")
        except ValueError as e:
            raise InvalidArgument(str(e)) from e
        held = provider_cost_ucr(max_input_tokens, max_output_tokens, in_price, out_price)
        if held > MAX_UCR:
            raise InvalidArgument("reservation too large")
        ttl_s = ttl_s if ttl_s > 0 else self.default_ttl_s
        try:
            async with self.engine.begin() as conn:
                existing = (await conn.execute(select(R).where(R.c.request_id == request_id))).first()
                if existing is not None:
                    return await self._replay_reserve(conn, existing, account)
                available = await self._available(conn, account)
                if not await self._debit(conn, account, pending=held):
                    raise InsufficientFunds(f"account {account!r} has {available} ucr available, needs {held}")
                await self._ensure_account(conn, USAGE_SINK, "platform")
                await self._credit(conn, USAGE_SINK, pending=held)
                now = _now_ms()
                await conn.execute(
                    R.insert().values(
                        request_id=request_id,
                        account=account,
                        credit_account=USAGE_SINK,
                        model=model[:120],
                        input_usd_per_mtok=str(in_price),
                        output_usd_per_mtok=str(out_price),
                        price_book_version=price_book_version[:60],
                        held_ucr=held,
                        status="pending",
                        charged_ucr=0,
                        unpaid_ucr=0,
                        usage_source="",
                        expires_at_ms=now + ttl_s * 1000,
                        created_at_ms=now,
                    )
                )
                await conn.execute(
                    T.insert().values(
                        idempotency_id=f"reserve:{request_id}",
                        kind="pending",
                        debit_account=account,
                        credit_account=USAGE_SINK,
                        amount_ucr=held,
                        request_id=request_id,
                        memo=model[:200],
                        created_at_ms=now,
                    )
                )
                return ReserveOutcome(request_id, held, available - held, replayed=False)
        except IntegrityError:
            async with self.engine.connect() as conn:
                existing = (await conn.execute(select(R).where(R.c.request_id == request_id))).first()
                if existing is None:
                    raise
                return await self._replay_reserve(conn, existing, account)

    async def _replay_reserve(self, conn: AsyncConnection, row, account: str) -> ReserveOutcome:
        if row.account != account:
            raise Conflict(f"request id {row.request_id!r} was reserved on another account")
        return ReserveOutcome(row.request_id, row.held_ucr, await self._available(conn, account), replayed=True)

    async def settle(self, request_id: str, input_tokens: int, output_tokens: int, usage_source: str) -> SettleOutcome:
        _check_id(request_id, "request_id")
        if input_tokens < 0 or output_tokens < 0:
            raise InvalidArgument("input_tokens, output_tokens: must be non-negative")
        async with self.engine.begin() as conn:
            r = (
                await conn.execute(select(R).where(R.c.request_id == request_id).with_for_update())
            ).first()
            if r is None:
                raise NotFound(f"reservation {request_id!r} not found")
            if r.status == "posted":
                return SettleOutcome(
                    request_id, r.held_ucr, r.charged_ucr, r.held_ucr - min(r.charged_ucr, r.held_ucr),
                    r.unpaid_ucr, r.price_book_version, replayed=True,
                )
            if r.status == "voided":
                raise Conflict(f"reservation {request_id!r} was voided")
            charge = provider_cost_ucr(
                input_tokens, output_tokens, Decimal(r.input_usd_per_mtok), Decimal(r.output_usd_per_mtok)
            )
            if charge > MAX_UCR:
                raise InvalidArgument("usage too large")
            held = r.held_ucr if r.status == "pending" else 0  # an expired hold was already released
            from_hold = min(charge, held)
            extra = charge - from_hold
            # Release the hold and post what it covers; then take any excess from what is
            # available, never more (the shortfall is recorded as unpaid, never a negative balance).
            await conn.execute(
                update(A)
                .where(A.c.id == r.account)
                .values(debits_pending=A.c.debits_pending - held, debits_posted=A.c.debits_posted + from_hold)
            )
            paid_extra = 0
            if extra:
                available = await self._available(conn, r.account, lock=True)
                paid_extra = min(extra, max(available, 0))
                if paid_extra and not await self._debit(conn, r.account, posted=paid_extra):
                    raise InsufficientFunds("account changed under a locked settlement")  # cannot happen
            charged = from_hold + paid_extra
            await conn.execute(
                update(A)
                .where(A.c.id == r.credit_account)
                .values(credits_pending=A.c.credits_pending - held, credits_posted=A.c.credits_posted + charged)
            )
            await conn.execute(
                update(R)
                .where(R.c.request_id == request_id)
                .values(status="posted", charged_ucr=charged, unpaid_ucr=extra - paid_extra, usage_source=usage_source)
            )
            await conn.execute(
                T.insert().values(
                    idempotency_id=f"settle:{request_id}",
                    kind="post",
                    debit_account=r.account,
                    credit_account=r.credit_account,
                    amount_ucr=charged,
                    request_id=request_id,
                    memo=f"{usage_source} usage {input_tokens}+{output_tokens} tokens"[:200],
                    created_at_ms=_now_ms(),
                )
            )
            return SettleOutcome(
                request_id, held, charged, held - from_hold, extra - paid_extra, r.price_book_version, replayed=False
            )

    async def void(self, request_id: str, reason: str = "") -> tuple[int, bool]:
        """Releases a pending hold. Returns ``(released_ucr, replayed)``."""
        _check_id(request_id, "request_id")
        async with self.engine.begin() as conn:
            r = (
                await conn.execute(select(R).where(R.c.request_id == request_id).with_for_update())
            ).first()
            if r is None:
                raise NotFound(f"reservation {request_id!r} not found")
            if r.status == "voided":
                return r.held_ucr, True
            if r.status != "pending":
                raise Conflict(f"reservation {request_id!r} is {r.status}")
            await conn.execute(
                update(A).where(A.c.id == r.account).values(debits_pending=A.c.debits_pending - r.held_ucr)
            )
            await conn.execute(
                update(A).where(A.c.id == r.credit_account).values(credits_pending=A.c.credits_pending - r.held_ucr)
            )
            await conn.execute(update(R).where(R.c.request_id == request_id).values(status="voided"))
            await conn.execute(
                T.insert().values(
                    idempotency_id=f"void:{request_id}",
                    kind="void",
                    debit_account=r.account,
                    credit_account=r.credit_account,
                    amount_ucr=r.held_ucr,
                    request_id=request_id,
                    memo=reason[:200],
                    created_at_ms=_now_ms(),
                )
            )
            return r.held_ucr, False

    async def balance(self, account: str) -> BalanceView:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(A).where(A.c.id == account))).first()
        if row is None:
            raise NotFound(f"account {account!r} not found")
        posted = row.credits_posted - row.debits_posted
        return BalanceView(account, posted, row.debits_pending, posted - row.debits_pending)
