"""Money movements between accounts: deposits, AI-credit grants, key funding, refunds,
key deposits, balances and statements. Reservations are in ``reservations``.

Each operation is one transaction, keyed by a caller-supplied idempotency id that is
permanent: a replay returns the stored outcome (a failure included), and a replay with
other fields is a ``Conflict``. A concurrent duplicate loses the unique insert, rolls
back, and is answered from what the winner stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Awaitable, Callable

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cg_ledger import accounts, store
from cg_ledger.accounts import CREDITS, FEES, AccountId
from cg_ledger.errors import Conflict, InsufficientFunds, InvalidArgument, NotFound
from cglib.db import READ
from cglib.faults import crash_point
from cg_ledger.pricing import MAX_UCR, parse_price, platform_fee_ucr

FAILED_FUNDS = "insufficient_funds"


@dataclass(frozen=True)
class TransferOutcome:
    transfer_id: int
    idempotency_id: str
    amount: int
    replayed: bool


@dataclass(frozen=True)
class FundingOutcome:
    budget_ucr: int
    fee_ucr: int
    replayed: bool

    @property
    def total_ucr(self) -> int:
        return self.budget_ucr + self.fee_ucr


@dataclass(frozen=True)
class BalanceView:
    account: str
    posted: int
    pending: int
    available: int


def _view(row) -> BalanceView:
    posted = row.credits_posted - row.debits_posted
    return BalanceView(row.id, posted, row.debits_pending, posted - row.debits_pending)


def check_amount(amount: int, field: str = "amount") -> None:
    if amount <= 0:
        raise InvalidArgument(f"{field}: must be positive")
    if amount > MAX_UCR:
        raise InvalidArgument(f"{field}: too large")


def check_id(value: str, field: str) -> None:
    if not value or len(value) > 120 or not value.isprintable():
        raise InvalidArgument(f"{field}: required, printable, at most 120 characters")


def _owner(value: str, field: str) -> str:
    if not value or len(value) > 64 or ":" in value or not value.isprintable():
        raise InvalidArgument(f"{field}: required, at most 64 characters, no ':'")
    return value


class Book:
    def __init__(self, engine: AsyncEngine, on_change: Callable[[list[str]], None] | None = None) -> None:
        self.engine = engine
        # told which accounts a committed operation moved (events.BalanceEvents.changed)
        self.on_change = on_change

    # -- the idempotent transaction ------------------------------------------------

    async def _once(
        self,
        idempotency_id: str,
        op: str,
        debit: str,
        credit: str,
        amount: int | None,
        apply: Callable[[AsyncConnection], Awaitable[TransferOutcome]],
    ) -> TransferOutcome:
        """Runs ``apply`` once per idempotency id. ``amount=None``: decided by ``apply``."""
        try:
            async with self.engine.begin() as conn:
                row = await store.stored_transfer(conn, idempotency_id)
                if row is not None:
                    return self._replay(row, op, debit, credit, amount)
                outcome = await apply(conn)
                crash_point(f"{op}:before_commit")
            crash_point(f"{op}:after_commit")
            if self.on_change is not None:
                self.on_change([debit, credit])
            return outcome
        except InsufficientFunds:
            await self._store_failure(idempotency_id, op, debit, credit, amount or 0)
            raise
        except IntegrityError:
            async with self.engine.connect() as conn:
                await conn.execution_options(**READ)
                row = await store.stored_transfer(conn, idempotency_id)
            if row is None:
                raise
            return self._replay(row, op, debit, credit, amount)

    async def _store_failure(self, idempotency_id: str, op: str, debit: str, credit: str, amount: int) -> None:
        """Keeps a failed outcome under its id. If a concurrent call stored an outcome
        first, that one stands (and is what a replay will see)."""
        try:
            async with self.engine.begin() as conn:
                await store.insert_transfer(conn, idempotency_id, op, debit, credit, amount, outcome=FAILED_FUNDS)
        except IntegrityError:
            pass

    @staticmethod
    def _replay(row, op: str, debit: str, credit: str, amount: int | None) -> TransferOutcome:
        same = (row.kind, row.debit_account, row.credit_account) == (op, debit, credit)
        if not same or (amount is not None and row.amount_ucr != amount and row.outcome == "ok"):
            raise Conflict(f"idempotency id {row.idempotency_id!r} was used for a different operation")
        if row.outcome != "ok":
            raise InsufficientFunds(f"idempotency id {row.idempotency_id!r} failed before: {row.outcome}")
        return TransferOutcome(row.id, row.idempotency_id, row.amount_ucr, replayed=True)

    async def _move(self, conn: AsyncConnection, op: str, idem: str, debit: AccountId, credit: AccountId,
                    amount: int, memo: str, create_debit: bool = False) -> int:
        """Posts one transfer: debit (never below zero unless external) and credit."""
        if debit.unit != credit.unit:
            raise InvalidArgument(f"cannot move {debit.unit} into a {credit.unit} account")
        if create_debit:
            await store.ensure_account(conn, debit)
        elif not await store.exists(conn, debit.id):
            raise NotFound(f"account {debit.id!r} not found")
        await store.ensure_account(conn, credit)
        await store.lock_accounts(conn, [debit.id, credit.id])
        if not await store.debit(conn, debit.id, posted=amount):
            have = await store.available(conn, debit.id)
            raise InsufficientFunds(f"account {debit.id!r} has {have} available, needs {amount}")
        await store.credit(conn, credit.id, amount)
        return await store.insert_transfer(conn, idem, op, debit.id, credit.id, amount, memo=memo)

    async def _simple(self, op: str, idem: str, debit: AccountId, credit: AccountId, amount: int, memo: str,
                      create_debit: bool = False) -> TransferOutcome:
        async def apply(conn: AsyncConnection) -> TransferOutcome:
            tid = await self._move(conn, op, idem, debit, credit, amount, memo, create_debit)
            return TransferOutcome(tid, idem, amount, replayed=False)

        return await self._once(idem, op, debit.id, credit.id, amount, apply)

    # -- operations ------------------------------------------------------------------

    async def deposit(self, idempotency_id: str, account: str, amount_ucr: int, memo: str = "") -> TransferOutcome:
        """A partner buys credits."""
        check_id(idempotency_id, "idempotency_id")
        target = accounts.parse(account, kinds={"partner"})
        check_amount(amount_ucr, "amount_ucr")
        return await self._simple("deposit", idempotency_id, accounts.external(CREDITS), target, amount_ucr, memo,
                                  create_debit=True)

    async def grant_ai_credits(self, idempotency_id: str, customer_account: str, amount_uai: int,
                               memo: str = "") -> TransferOutcome:
        check_id(idempotency_id, "idempotency_id")
        target = accounts.parse(customer_account, "customer_account", kinds={"customer"})
        check_amount(amount_uai, "amount_uai")
        return await self._simple("grant", idempotency_id, accounts.external(target.unit), target, amount_uai, memo,
                                  create_debit=True)

    async def transfer(self, idempotency_id: str, debit_account: str, credit_account: str, amount_ucr: int,
                       memo: str = "") -> TransferOutcome:
        check_id(idempotency_id, "idempotency_id")
        debit = accounts.parse(debit_account, "debit_account", kinds={"partner", "key", "customer"})
        credit = accounts.parse(credit_account, "credit_account", kinds={"partner", "key", "customer"})
        check_amount(amount_ucr, "amount_ucr")
        if debit.id == credit.id:
            raise InvalidArgument("credit_account: must differ from debit_account")
        return await self._simple("transfer", idempotency_id, debit, credit, amount_ucr, memo)

    @staticmethod
    def quote_funding(budget_ucr: int, fee_rate: str) -> tuple[int, int]:
        check_amount(budget_ucr, "budget_ucr")
        try:
            fee = platform_fee_ucr(budget_ucr, parse_price(fee_rate or "0", "fee_rate"))
        except ValueError as e:
            raise InvalidArgument(str(e)) from e
        if budget_ucr + fee > MAX_UCR:
            raise InvalidArgument("budget_ucr: too large")
        return budget_ucr, fee

    async def fund_key(self, idempotency_id: str, partner_id: str, key_id: str, budget_ucr: int,
                       fee_rate: str) -> FundingOutcome:
        """Budget into the key and the tier's fee to the platform, from the partner, atomically."""
        check_id(idempotency_id, "idempotency_id")
        partner = accounts.parse(f"partner:{_owner(partner_id, 'partner_id')}")
        key = accounts.parse(accounts.key_account(_owner(key_id, "key_id")))
        budget, fee = self.quote_funding(budget_ucr, fee_rate)
        fees = accounts.parse(FEES)

        async def apply(conn: AsyncConnection) -> TransferOutcome:
            if not await store.exists(conn, partner.id):
                raise NotFound(f"account {partner.id!r} not found")
            await store.ensure_account(conn, key)
            await store.ensure_account(conn, fees)
            await store.lock_accounts(conn, [partner.id, key.id])
            if not await store.debit(conn, partner.id, posted=budget + fee):
                have = await store.available(conn, partner.id)
                raise InsufficientFunds(f"partner has {have} ucr available, funding needs {budget + fee}")
            await store.credit(conn, key.id, budget)
            tid = await store.insert_transfer(conn, idempotency_id, "fund", partner.id, key.id, budget,
                                              memo=f"key budget, fee rate {fee_rate or '0'}")
            if fee:
                await store.credit(conn, fees.id, fee)
                await store.insert_transfer(conn, f"{idempotency_id}:fee", "fee", partner.id, fees.id, fee,
                                            memo="platform fee on key funding")
            return TransferOutcome(tid, idempotency_id, budget, replayed=False)

        out = await self._once(idempotency_id, "fund", partner.id, key.id, budget, apply)
        return FundingOutcome(budget, fee, out.replayed)

    async def refund_key(self, idempotency_id: str, partner_id: str, key_id: str) -> TransferOutcome:
        """Moves what the key has available back to its partner (0 is a valid refund).
        Holds of requests still in flight stay, and settle from the key as usual."""
        check_id(idempotency_id, "idempotency_id")
        partner = accounts.parse(f"partner:{_owner(partner_id, 'partner_id')}")
        key = accounts.parse(accounts.key_account(_owner(key_id, "key_id")))

        async def apply(conn: AsyncConnection) -> TransferOutcome:
            if not await store.exists(conn, key.id):
                raise NotFound(f"account {key.id!r} not found")
            await store.ensure_account(conn, partner)
            await store.lock_accounts(conn, [partner.id, key.id])
            amount = max(await store.available(conn, key.id), 0)
            if amount:
                await store.debit(conn, key.id, posted=amount)
                await store.credit(conn, partner.id, amount)
            tid = await store.insert_transfer(conn, idempotency_id, "refund", key.id, partner.id, amount,
                                              memo="unused budget of a revoked key")
            return TransferOutcome(tid, idempotency_id, amount, replayed=False)

        return await self._once(idempotency_id, "refund", key.id, partner.id, None, apply)

    async def hold_key_deposit(self, idempotency_id: str, partner_id: str, key_id: str,
                               amount_ucr: int) -> TransferOutcome:
        check_id(idempotency_id, "idempotency_id")
        partner = accounts.parse(f"partner:{_owner(partner_id, 'partner_id')}")
        deposit = accounts.parse(f"keydeposit:{_owner(key_id, 'key_id')}")
        check_amount(amount_ucr, "amount_ucr")
        return await self._simple("hold_deposit", idempotency_id, partner, deposit, amount_ucr, "key deposit")

    async def release_key_deposit(self, idempotency_id: str, partner_id: str, key_id: str) -> TransferOutcome:
        check_id(idempotency_id, "idempotency_id")
        partner = accounts.parse(f"partner:{_owner(partner_id, 'partner_id')}")
        deposit = accounts.parse(f"keydeposit:{_owner(key_id, 'key_id')}")

        async def apply(conn: AsyncConnection) -> TransferOutcome:
            if not await store.exists(conn, deposit.id):
                raise NotFound(f"account {deposit.id!r} not found")
            await store.lock_accounts(conn, [partner.id, deposit.id])
            amount = max(await store.available(conn, deposit.id), 0)
            if amount:
                await store.debit(conn, deposit.id, posted=amount)
                await store.credit(conn, partner.id, amount)
            tid = await store.insert_transfer(conn, idempotency_id, "release_deposit", deposit.id, partner.id,
                                              amount, memo="key deposit released")
            return TransferOutcome(tid, idempotency_id, amount, replayed=False)

        return await self._once(idempotency_id, "release_deposit", deposit.id, partner.id, None, apply)

    # -- reads -----------------------------------------------------------------------

    async def balance(self, account: str) -> BalanceView:
        if account not in accounts.EXTERNAL.values():
            accounts.parse(account)
        async with self.engine.connect() as conn:
            await conn.execution_options(**READ)
            row = (await conn.execute(select(store.A).where(store.A.c.id == account))).first()
        if row is None:
            raise NotFound(f"account {account!r} not found")
        return _view(row)

    async def balances(self, account_ids: list[str]) -> list[BalanceView]:
        if len(account_ids) > 1000:
            raise InvalidArgument("accounts: at most 1000")
        for account in account_ids:
            accounts.parse(account)
        async with self.engine.connect() as conn:
            await conn.execution_options(**READ)
            rows = (await conn.execute(select(store.A).where(store.A.c.id.in_(set(account_ids))))).all()
        return [_view(r) for r in rows]

    async def statement(self, account: str, page_size: int = 50, page_token: str = ""):
        """Transfers that moved money in or out of ``account``, newest first.
        Returns ``(rows, next_page_token)``; the token is the last id seen."""
        accounts.parse(account)
        if not 0 <= page_size <= 1000:
            raise InvalidArgument("page_size: between 1 and 1000")
        page_size = page_size or 50
        try:
            before = int(page_token) if page_token else None
        except ValueError:
            raise InvalidArgument("page_token: not a token from this API") from None
        T = store.T
        q = select(T).where(or_(T.c.debit_account == account, T.c.credit_account == account), T.c.outcome == "ok")
        if before is not None:
            q = q.where(T.c.id < before)
        q = q.order_by(T.c.id.desc()).limit(page_size + 1)
        async with self.engine.connect() as conn:
            await conn.execution_options(**READ)
            if not await store.exists(conn, account):
                raise NotFound(f"account {account!r} not found")
            rows = (await conn.execute(q)).all()
        more = len(rows) > page_size
        rows = rows[:page_size]
        return rows, (str(rows[-1].id) if more else "")


def decimal_or_invalid(raw: str, field: str, default: str = "") -> Decimal:
    try:
        return parse_price(raw or default, field)
    except ValueError as e:
        raise InvalidArgument(str(e)) from e
