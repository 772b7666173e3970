"""Money movements between accounts: deposits, AI-credit grants, key funding, refunds,
key deposits. Reservations are in ``reservations``; reads in ``balances``.

Each operation is one transaction, keyed by a caller-supplied idempotency id that is
permanent: a replay returns the stored outcome (a failure included), and a replay with
other fields is a ``Conflict``. A concurrent duplicate loses the unique insert, rolls
back, and is answered from what the winner stored. Amounts and strings are checked
against ``limits`` before anything runs; a counter that would leave int64 is refused
by the SQL itself (``sql``) and the transaction rolls back (``OutOfRange``).

A refund closes the key's account (``closed_to``): from then on it takes no holds and no
new money, and whatever its in-flight holds release is moved to the partner by the
reservation that releases it (``reservations``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cg_ledger import accounts, store
from cg_ledger.accounts import CREDITS, FEES, AccountId
from cg_ledger.balances import Balances
from cg_ledger.dberrors import is_unique_violation, out_of_range
from cg_ledger.errors import AccountClosed, Conflict, InsufficientFunds, InvalidArgument, NotFound, OutOfRange
from cg_ledger.limits import (
    MAX_MEMO_LEN,
    MAX_OWNER_LEN,
    check_amount,
    check_bound,
    check_idempotency_id,
    check_text,
    decimal_or_invalid,
)
from cg_ledger.pricing import platform_fee_ucr
from cglib.db import READ
from cglib.faults import crash_point

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


def _owner(value: str, field: str) -> str:
    if not value or len(value) > MAX_OWNER_LEN or ":" in value or not value.isprintable():
        raise InvalidArgument(f"{field}: required, printable, at most {MAX_OWNER_LEN} characters, no ':'")
    return value


async def _debit(conn: AsyncConnection, account: AccountId, amount: int, what: str = "") -> None:
    """Posts a debit. A guarded account short of money: ``InsufficientFunds``; an
    unguarded one (external) whose debits would pass int64: ``OutOfRange``."""
    if await store.debit(conn, account.id, amount):
        return
    if account.kind == "external":
        raise OutOfRange(f"{account.id}: its debits would pass the 64-bit range")
    have = await store.available(conn, account.id)
    raise InsufficientFunds(f"{what or account.id!r} has {have} available, needs {amount}")


async def _credit(conn: AsyncConnection, account: str, amount: int) -> None:
    """Posts a credit to an account that exists (``ensure_account`` ran)."""
    if not await store.credit(conn, account, amount):
        raise OutOfRange(f"{account}: its credits would pass the 64-bit range")


async def _refuse_closed(conn: AsyncConnection, account: AccountId) -> None:
    """New money into a closed account would be stranded there: refused. (Only key
    accounts are ever closed; the read is skipped for the others.)"""
    if account.kind == "key" and (await store.state(conn, account.id))[1]:
        raise AccountClosed(f"account {account.id!r} is closed (the key was revoked)")


class Book(Balances):
    def __init__(self, engine: AsyncEngine, on_change: Callable[[list[str]], None] | None = None) -> None:
        super().__init__(engine)
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
        except InsufficientFunds:
            await self._store_failure(idempotency_id, op, debit, credit, amount or 0)
            raise
        except (DBAPIError, OverflowError) as e:
            if isinstance(e, DBAPIError) and is_unique_violation(e):
                return await self._after_race(e, idempotency_id, op, debit, credit, amount)
            err = out_of_range(e)
            if err is None:
                raise
            raise err from e
        crash_point(f"{op}:after_commit")
        if self.on_change is not None:
            self.on_change([debit, credit])
        return outcome

    async def _after_race(
        self, e: DBAPIError, idempotency_id: str, op: str, debit: str, credit: str, amount: int | None
    ) -> TransferOutcome:
        """A concurrent call with this id committed first: answer with its outcome."""
        async with self.engine.connect() as conn:
            await conn.execution_options(**READ)
            row = await store.stored_transfer(conn, idempotency_id)
        if row is None:
            raise e
        return self._replay(row, op, debit, credit, amount)

    async def _store_failure(self, idempotency_id: str, op: str, debit: str, credit: str, amount: int) -> None:
        """Keeps a failed outcome under its id. If a concurrent call stored an outcome
        first, that one stands (and is what a replay will see)."""
        try:
            async with self.engine.begin() as conn:
                await store.insert_transfer(conn, idempotency_id, op, debit, credit, amount, outcome=FAILED_FUNDS)
        except DBAPIError as e:
            if not is_unique_violation(e):
                raise

    @staticmethod
    def _replay(row, op: str, debit: str, credit: str, amount: int | None) -> TransferOutcome:
        same = (row.kind, row.debit_account, row.credit_account) == (op, debit, credit)
        if not same or (amount is not None and row.amount_ucr != amount and row.outcome == "ok"):
            raise Conflict(f"idempotency id {row.idempotency_id!r} was used for a different operation")
        if row.outcome != "ok":
            raise InsufficientFunds(f"idempotency id {row.idempotency_id!r} failed before: {row.outcome}")
        return TransferOutcome(row.id, row.idempotency_id, row.amount_ucr, replayed=True)

    async def _move(
        self,
        conn: AsyncConnection,
        op: str,
        idem: str,
        debit: AccountId,
        credit: AccountId,
        amount: int,
        memo: str,
        create_debit: bool = False,
    ) -> int:
        """Posts one transfer: debit (never below zero unless external) and credit."""
        if debit.unit != credit.unit:
            raise InvalidArgument(f"cannot move {debit.unit} into a {credit.unit} account")
        if create_debit:
            await store.ensure_account(conn, debit)
        elif not await store.exists(conn, debit.id):
            raise NotFound(f"account {debit.id!r} not found")
        await store.ensure_account(conn, credit)
        await store.lock_accounts(conn, [debit.id, credit.id])
        await _refuse_closed(conn, credit)
        await _debit(conn, debit, amount)
        await _credit(conn, credit.id, amount)
        return await store.insert_transfer(conn, idem, op, debit.id, credit.id, amount, memo=memo)

    async def _simple(
        self,
        op: str,
        idem: str,
        debit: AccountId,
        credit: AccountId,
        amount: int,
        memo: str,
        create_debit: bool = False,
    ) -> TransferOutcome:
        async def apply(conn: AsyncConnection) -> TransferOutcome:
            tid = await self._move(conn, op, idem, debit, credit, amount, memo, create_debit)
            return TransferOutcome(tid, idem, amount, replayed=False)

        return await self._once(idem, op, debit.id, credit.id, amount, apply)

    # -- operations ------------------------------------------------------------------

    async def deposit(self, idempotency_id: str, account: str, amount_ucr: int, memo: str = "") -> TransferOutcome:
        """A partner buys credits."""
        check_idempotency_id(idempotency_id)
        target = accounts.parse(account, kinds={"partner"})
        check_amount(amount_ucr, "amount_ucr")
        check_text(memo, "memo", MAX_MEMO_LEN)
        return await self._simple(
            "deposit", idempotency_id, accounts.external(CREDITS), target, amount_ucr, memo, create_debit=True
        )

    async def grant_ai_credits(
        self, idempotency_id: str, customer_account: str, amount_uai: int, memo: str = ""
    ) -> TransferOutcome:
        check_idempotency_id(idempotency_id)
        target = accounts.parse(customer_account, "customer_account", kinds={"customer"})
        check_amount(amount_uai, "amount_uai")
        check_text(memo, "memo", MAX_MEMO_LEN)
        return await self._simple(
            "grant", idempotency_id, accounts.external(target.unit), target, amount_uai, memo, create_debit=True
        )

    async def transfer(
        self, idempotency_id: str, debit_account: str, credit_account: str, amount_ucr: int, memo: str = ""
    ) -> TransferOutcome:
        check_idempotency_id(idempotency_id)
        debit = accounts.parse(debit_account, "debit_account", kinds={"partner", "key", "customer"})
        credit = accounts.parse(credit_account, "credit_account", kinds={"partner", "key", "customer"})
        check_amount(amount_ucr, "amount_ucr")
        check_text(memo, "memo", MAX_MEMO_LEN)
        if debit.id == credit.id:
            raise InvalidArgument("credit_account: must differ from debit_account")
        return await self._simple("transfer", idempotency_id, debit, credit, amount_ucr, memo)

    @staticmethod
    def quote_funding(budget_ucr: int, fee_rate: str) -> tuple[int, int]:
        """(budget, fee): what funding a key takes from the partner, budget + fee being one
        amount (at most ``MAX_AMOUNT``)."""
        check_amount(budget_ucr, "budget_ucr")
        try:
            fee = platform_fee_ucr(budget_ucr, decimal_or_invalid(fee_rate, "fee_rate", default="0"))
        except ValueError as e:
            raise InvalidArgument(str(e)) from e
        check_bound(budget_ucr + fee, "budget_ucr + fee")
        return budget_ucr, fee

    async def fund_key(
        self, idempotency_id: str, partner_id: str, key_id: str, budget_ucr: int, fee_rate: str
    ) -> FundingOutcome:
        """Budget into the key and the tier's fee to the platform, from the partner, atomically."""
        check_idempotency_id(idempotency_id)
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
            await _refuse_closed(conn, key)
            await _debit(conn, partner, budget + fee, what="partner")
            await _credit(conn, key.id, budget)
            tid = await store.insert_transfer(
                conn, idempotency_id, "fund", partner.id, key.id, budget, memo=f"key budget, fee rate {fee_rate or '0'}"
            )
            if fee:
                await _credit(conn, fees.id, fee)
                await store.insert_transfer(
                    conn, f"{idempotency_id}:fee", "fee", partner.id, fees.id, fee, memo="platform fee on key funding"
                )
            return TransferOutcome(tid, idempotency_id, budget, replayed=False)

        out = await self._once(idempotency_id, "fund", partner.id, key.id, budget, apply)
        return FundingOutcome(budget, fee, out.replayed)

    async def refund_key(self, idempotency_id: str, partner_id: str, key_id: str) -> TransferOutcome:
        """Closes a revoked key's account to its partner: what it has available moves back
        now (0 is a valid refund; the fee stays paid), and from then on every release of a
        hold still in flight follows (``reservations``). A refund with a new id on a closed
        account moves what is available then (nothing, normally); one naming another
        partner is a ``Conflict``."""
        check_idempotency_id(idempotency_id)
        partner = accounts.parse(f"partner:{_owner(partner_id, 'partner_id')}")
        key = accounts.parse(accounts.key_account(_owner(key_id, "key_id")))

        async def apply(conn: AsyncConnection) -> TransferOutcome:
            if not await store.exists(conn, key.id):
                raise NotFound(f"account {key.id!r} not found")
            await store.ensure_account(conn, partner)
            await store.lock_accounts(conn, [partner.id, key.id])
            available, closed_to = await store.state(conn, key.id)
            if closed_to and closed_to != partner.id:
                raise Conflict(f"account {key.id!r} is closed to {closed_to!r}, not {partner.id!r}")
            amount = max(available, 0)
            if amount:
                await _debit(conn, key, amount)
                await _credit(conn, partner.id, amount)
            if not closed_to:
                await store.close(conn, key.id, partner.id)
            tid = await store.insert_transfer(
                conn, idempotency_id, "refund", key.id, partner.id, amount, memo="unused budget of a revoked key"
            )
            return TransferOutcome(tid, idempotency_id, amount, replayed=False)

        return await self._once(idempotency_id, "refund", key.id, partner.id, None, apply)

    async def hold_key_deposit(
        self, idempotency_id: str, partner_id: str, key_id: str, amount_ucr: int
    ) -> TransferOutcome:
        check_idempotency_id(idempotency_id)
        partner = accounts.parse(f"partner:{_owner(partner_id, 'partner_id')}")
        deposit = accounts.parse(f"keydeposit:{_owner(key_id, 'key_id')}")
        check_amount(amount_ucr, "amount_ucr")
        return await self._simple("hold_deposit", idempotency_id, partner, deposit, amount_ucr, "key deposit")

    async def release_key_deposit(self, idempotency_id: str, partner_id: str, key_id: str) -> TransferOutcome:
        check_idempotency_id(idempotency_id)
        partner = accounts.parse(f"partner:{_owner(partner_id, 'partner_id')}")
        deposit = accounts.parse(f"keydeposit:{_owner(key_id, 'key_id')}")

        async def apply(conn: AsyncConnection) -> TransferOutcome:
            if not await store.exists(conn, deposit.id):
                raise NotFound(f"account {deposit.id!r} not found")
            await store.lock_accounts(conn, [partner.id, deposit.id])
            amount = max(await store.available(conn, deposit.id), 0)
            if amount:
                await _debit(conn, deposit, amount)
                await _credit(conn, partner.id, amount)
            tid = await store.insert_transfer(
                conn, idempotency_id, "release_deposit", deposit.id, partner.id, amount, memo="key deposit released"
            )
            return TransferOutcome(tid, idempotency_id, amount, replayed=False)

        return await self._once(idempotency_id, "release_deposit", deposit.id, partner.id, None, apply)
