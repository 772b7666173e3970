"""Money movements between accounts: deposits, AI-credit grants, key funding, refunds,
key deposits. Reservations are in ``reservations``; reads in ``balances``.

Each operation is one transaction, keyed by a caller-supplied idempotency id that is
permanent: a replay returns the stored outcome (a failure included), and a replay with
other fields is a ``Conflict`` (``idempotent.once``: a concurrent duplicate loses the
unique insert, rolls back, and is answered from what the winner stored). Amounts and strings are checked
against ``limits`` before anything runs; a counter that would leave int64 is refused
by the SQL itself (``sql``) and the transaction rolls back (``OutOfRange``).

A refund closes the key's account (``closed_to``): from then on it takes no holds and no
new money, and whatever its in-flight holds release is moved to the partner by the
reservation that releases it (``reservations``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cg_ledger import accounts, idempotent
from cg_ledger.accounts import CREDITS, FEES, AccountId
from cg_ledger.balances import Balances
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
from cg_ledger.rows import Rows
from cg_ledger.txrunner import Runner
from cglib.faults import crash_point
from cglib.pricing import platform_fee_ucr

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


def _debit(db: Rows, account: AccountId, amount: int, what: str = "") -> None:
    """Posts a debit. A guarded account short of money: ``InsufficientFunds``; an
    unguarded one (external) whose debits would pass int64: ``OutOfRange``."""
    if db.debit(account.id, amount):
        return
    if account.kind == "external":
        raise OutOfRange(f"{account.id}: its debits would pass the 64-bit range")
    have = db.available(account.id)
    raise InsufficientFunds(f"{what or account.id!r} has {have} available, needs {amount}")


def _credit(db: Rows, account: str, amount: int) -> None:
    """Posts a credit to an account that exists (``ensure_account`` ran)."""
    if not db.credit(account, amount):
        raise OutOfRange(f"{account}: its credits would pass the 64-bit range")


def _refuse_closed(db: Rows, account: AccountId) -> None:
    """New money into a closed account would be stranded there: refused. (Only key
    accounts are ever closed; the read is skipped for the others.)"""
    if account.kind == "key" and db.state(account.id)[1]:
        raise AccountClosed(f"account {account.id!r} is closed (the key was revoked)")


class Book(Balances):
    def __init__(self, db: Runner, on_change: Callable[[list[str]], None] | None = None) -> None:
        super().__init__(db)
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
        apply: Callable[[Rows], TransferOutcome],
    ) -> TransferOutcome:
        """Runs ``apply`` once per idempotency id (``idempotent.once``). ``amount=None``:
        decided by ``apply``."""

        def attempt(db: Rows) -> tuple[TransferOutcome, bool]:
            row = db.transfer(idempotency_id)
            if row is not None:
                return self._replay(row, op, debit, credit, amount), False
            outcome = apply(db)
            crash_point(f"{op}:before_commit")
            return outcome, True

        def refused(db: Rows) -> None:
            db.insert_transfer(idempotency_id, op, debit, credit, amount or 0, outcome=FAILED_FUNDS)

        def after_race(db: Rows) -> tuple[TransferOutcome, bool]:
            row = db.transfer(idempotency_id)
            if row is None:
                raise Conflict(f"idempotency id {idempotency_id!r} is being used concurrently")
            return self._replay(row, op, debit, credit, amount), False

        outcome, applied = await idempotent.once(self.db, attempt, refused, after_race)
        if applied:
            crash_point(f"{op}:after_commit")
            if self.on_change is not None:
                self.on_change([debit, credit])
        return outcome

    @staticmethod
    def _replay(row, op: str, debit: str, credit: str, amount: int | None) -> TransferOutcome:
        same = (row.kind, row.debit_account, row.credit_account) == (op, debit, credit)
        if not same or (amount is not None and row.amount_ucr != amount and row.outcome == "ok"):
            raise Conflict(f"idempotency id {row.idempotency_id!r} was used for a different operation")
        if row.outcome != "ok":
            raise InsufficientFunds(f"idempotency id {row.idempotency_id!r} failed before: {row.outcome}")
        return TransferOutcome(row.id, row.idempotency_id, row.amount_ucr, replayed=True)

    def _move(
        self,
        db: Rows,
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
            db.ensure_account(debit)
        elif not db.exists(debit.id):
            raise NotFound(f"account {debit.id!r} not found")
        db.ensure_account(credit)
        db.lock_accounts([debit.id, credit.id])
        _refuse_closed(db, credit)
        _debit(db, debit, amount)
        _credit(db, credit.id, amount)
        return db.insert_transfer(idem, op, debit.id, credit.id, amount, memo=memo)

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
        def apply(db: Rows) -> TransferOutcome:
            tid = self._move(db, op, idem, debit, credit, amount, memo, create_debit)
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

        def apply(db: Rows) -> TransferOutcome:
            if not db.exists(partner.id):
                raise NotFound(f"account {partner.id!r} not found")
            db.ensure_account(key)
            db.ensure_account(fees)
            db.lock_accounts([partner.id, key.id])
            _refuse_closed(db, key)
            _debit(db, partner, budget + fee, what="partner")
            _credit(db, key.id, budget)
            tid = db.insert_transfer(
                idempotency_id, "fund", partner.id, key.id, budget, memo=f"key budget, fee rate {fee_rate or '0'}"
            )
            if fee:
                _credit(db, fees.id, fee)
                db.insert_transfer(
                    f"{idempotency_id}:fee", "fee", partner.id, fees.id, fee, memo="platform fee on key funding"
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

        def apply(db: Rows) -> TransferOutcome:
            if not db.exists(key.id):
                raise NotFound(f"account {key.id!r} not found")
            db.ensure_account(partner)
            db.lock_accounts([partner.id, key.id])
            available, closed_to = db.state(key.id)
            if closed_to and closed_to != partner.id:
                raise Conflict(f"account {key.id!r} is closed to {closed_to!r}, not {partner.id!r}")
            amount = max(available, 0)
            if amount:
                _debit(db, key, amount)
                _credit(db, partner.id, amount)
            if not closed_to:
                db.close(key.id, partner.id)
            tid = db.insert_transfer(
                idempotency_id, "refund", key.id, partner.id, amount, memo="unused budget of a revoked key"
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

        def apply(db: Rows) -> TransferOutcome:
            if not db.exists(deposit.id):
                raise NotFound(f"account {deposit.id!r} not found")
            db.lock_accounts([partner.id, deposit.id])
            amount = max(db.available(deposit.id), 0)
            if amount:
                _debit(db, deposit, amount)
                _credit(db, partner.id, amount)
            tid = db.insert_transfer(
                idempotency_id, "release_deposit", deposit.id, partner.id, amount, memo="key deposit released"
            )
            return TransferOutcome(tid, idempotency_id, amount, replayed=False)

        return await self._once(idempotency_id, "release_deposit", deposit.id, partner.id, None, apply)
