"""The whole book at once, for operators: every account page by page, and an audit.

The audit reads everything in ONE snapshot (``Runner.read(snapshot=True)``: REPEATABLE
READ on PostgreSQL; a single read transaction on SQLite, which WAL keeps consistent), so a book that is moving while
it is read still adds up. Transfers and reservations are summed by SQL (GROUP BY),
never loaded; only the per-account sums come back, and each account is checked
against them:

| check            | what must hold                                                        |
|------------------|-----------------------------------------------------------------------|
| conservation     | per unit, posted balances (credits_posted - debits_posted) sum to 0   |
| not_integer      | SQLite: every counter (and transfer amount) is stored as an integer   |
| negative         | no counter below zero                                                 |
| overdrawn        | a guarded account: debits_pending + debits_posted <= credits_posted   |
| posted_mismatch  | posted counters = sums of the account's successful posted transfers   |
| pending_mismatch | debits_pending = its pending reservations' holds; credits_pending = 0 |

Posted transfers are ``models.POSTED_KINDS``; ``pending``, ``void`` and ``expire``
transfers record holds and moved nothing, and a failed outcome moved nothing either.
Sums are exact however broken the book is: SQLite's ``SUM`` fails on an int64 overflow,
so each sum is taken in two parts (``x / 10^9`` and ``x % 10^9``) and put together here.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from cg_ledger.accounts import KINDS
from cg_ledger.errors import InvalidArgument
from cg_ledger.limits import MAX_ACCOUNT_LEN
from cg_ledger.models import POSTED_KINDS
from cg_ledger.rows import Rows
from cg_ledger.txrunner import Runner

COUNTERS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
_SPLIT = 10**9
_POSTED = ", ".join(f"'{k}'" for k in POSTED_KINDS)
_COLUMNS = "id, kind, unit, debits_must_not_exceed_credits, " + ", ".join(COUNTERS) + ", closed_to, created_at_ms"
DEFAULT_PAGE, MAX_PAGE = 100, 1000


def _sum(expr: str) -> str:
    return f"SUM(({expr}) / {_SPLIT}), SUM(({expr}) % {_SPLIT})"


def _whole(hi, lo) -> int | Decimal:
    return _number(hi or 0) * _SPLIT + _number(lo or 0)


def _number(value) -> int | Decimal:
    """A stored value as an exact number (a REAL on a broken SQLite book stays visible)."""
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return Decimal(str(value))


@dataclass(frozen=True)
class Discrepancy:
    check: str
    account: str
    detail: str


@dataclass(frozen=True)
class UnitTotals:
    unit: str
    accounts: int
    sum_posted: int | Decimal
    sum_pending: int | Decimal
    external_in: int | Decimal


@dataclass
class AuditReport:
    accounts: int = 0
    transfers: int = 0
    units: list[UnitTotals] = field(default_factory=list)
    discrepancies: list[Discrepancy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.discrepancies


def _encode_token(account_id: str) -> str:
    return base64.urlsafe_b64encode(account_id.encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    try:
        value = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if len(token) > 200 or not value or len(value) > MAX_ACCOUNT_LEN or not value.isprintable():
        raise InvalidArgument("page_token: not a token from this API")
    return value


class Audit:
    def __init__(self, db: Runner) -> None:
        self.db = db

    async def list_accounts(self, page_size: int = 0, page_token: str = "", kind: str = ""):
        """``(rows, next_page_token)``: accounts in id order, ``page_size`` at a time."""
        if not 0 <= page_size <= MAX_PAGE:
            raise InvalidArgument(f"page_size: between 1 and {MAX_PAGE} (0: {DEFAULT_PAGE})")
        page_size = page_size or DEFAULT_PAGE
        if kind and kind not in KINDS:
            raise InvalidArgument(f"kind: one of {', '.join(KINDS)} (or empty)")
        after = _decode_token(page_token) if page_token else ""
        params: dict[str, object] = {"after": after, "limit": page_size + 1}
        where = "id > :after"
        if kind:
            params["kind"] = kind
            where += " AND kind = :kind"
        q = f"SELECT {_COLUMNS} FROM accounts WHERE {where} ORDER BY id LIMIT :limit"
        rows = await self.db.read(lambda db: db.query(q, **params))
        more = len(rows) > page_size
        rows = rows[:page_size]
        return rows, (_encode_token(rows[-1].id) if more else "")

    async def audit(self) -> AuditReport:
        return await self.db.read(self._audit, snapshot=True)

    @classmethod
    def _audit(cls, db: Rows) -> AuditReport:
        sqlite = not db.pg
        report = AuditReport()
        not_integer = "SUM(CASE WHEN typeof(amount_ucr) = 'integer' THEN 0 ELSE 1 END)" if sqlite else "0"
        count, bad = db.query(f"SELECT COUNT(*), {not_integer} FROM transfers")[0]
        report.transfers = int(count)
        if bad:
            report.discrepancies.append(Discrepancy("not_integer", "", f"{bad} transfer amounts are not integers"))
        units = db.query(
            f"SELECT unit, COUNT(*), {_sum('credits_posted - debits_posted')}, {_sum('debits_pending')}"
            " FROM accounts GROUP BY unit ORDER BY unit"
        )
        for unit, count, p_hi, p_lo, h_hi, h_lo in units:
            report.accounts += int(count)
            posted = _whole(p_hi, p_lo)
            report.units.append(UnitTotals(unit, int(count), posted, _whole(h_hi, h_lo), 0))
            if posted != 0:
                report.discrepancies.append(
                    Discrepancy("conservation", "", f"{unit}: posted balances sum to {posted}, not 0")
                )
        credited, debited = cls._posted(db)
        held = cls._holds(db)
        columns = _COLUMNS
        if sqlite:
            columns += ", " + ", ".join(f"typeof({c})" for c in COUNTERS)
        externals = {}
        for row in db.query(f"SELECT {columns} FROM accounts ORDER BY id"):
            report.discrepancies += _check_account(row, credited, debited, held, sqlite)
            if row.kind == "external":
                externals[row.unit] = _number(row.credits_posted) - _number(row.debits_posted)
        report.units = [
            UnitTotals(u.unit, u.accounts, u.sum_posted, u.sum_pending, -externals.get(u.unit, 0)) for u in report.units
        ]
        return report

    @staticmethod
    def _posted(db: Rows) -> tuple[dict, dict]:
        """Per account, the sums of the successful posted transfers it received and paid."""
        posted = f"FROM transfers WHERE outcome = 'ok' AND kind IN ({_POSTED})"
        rows = db.query(
            f"SELECT 'credit', credit_account, {_sum('amount_ucr')} {posted} GROUP BY credit_account UNION ALL"
            f" SELECT 'debit', debit_account, {_sum('amount_ucr')} {posted} GROUP BY debit_account"
        )
        sides: dict[str, dict[str, int | Decimal]] = {"credit": {}, "debit": {}}
        for side, account, hi, lo in rows:
            sides[side][account] = _whole(hi, lo)
        return sides["credit"], sides["debit"]

    @staticmethod
    def _holds(db: Rows) -> dict[str, int | Decimal]:
        """What each account's pending reservations hold: the payer's held_ucr and the
        customer's customer_held_uai."""
        pending = "FROM reservations WHERE status = 'pending'"
        rows = db.query(
            f"SELECT account, {_sum('held_ucr')} {pending} GROUP BY account UNION ALL"
            f" SELECT customer_account, {_sum('customer_held_uai')} {pending} AND customer_account <> ''"
            " GROUP BY customer_account"
        )
        held: dict[str, int | Decimal] = defaultdict(int)
        for account, hi, lo in rows:
            held[account] += _whole(hi, lo)
        return held


def _check_account(row, credited: dict, debited: dict, held: dict, sqlite: bool) -> list[Discrepancy]:
    out = []
    account = row.id
    if sqlite:
        types = dict(zip(COUNTERS, row[-len(COUNTERS) :], strict=True))
        bad = {c: t for c, t in types.items() if t != "integer"}
        if bad:
            out.append(Discrepancy("not_integer", account, ", ".join(f"{c} is {t}" for c, t in bad.items())))
    dp, dpo, cp, cpo = (_number(getattr(row, c)) for c in COUNTERS)
    negative = [c for c, v in zip(COUNTERS, (dp, dpo, cp, cpo), strict=True) if v < 0]
    if negative:
        out.append(Discrepancy("negative", account, ", ".join(f"{c} = {_number(getattr(row, c))}" for c in negative)))
    if row.debits_must_not_exceed_credits and dp + dpo > cpo:
        out.append(
            Discrepancy("overdrawn", account, f"debits_pending {dp} + debits_posted {dpo} > credits_posted {cpo}")
        )
    expect_credits, expect_debits = credited.get(account, 0), debited.get(account, 0)
    if (cpo, dpo) != (expect_credits, expect_debits):
        out.append(
            Discrepancy(
                "posted_mismatch",
                account,
                f"credits_posted {cpo} vs transfers {expect_credits}; debits_posted {dpo} vs transfers {expect_debits}",
            )
        )
    expect_held = held.get(account, 0)
    if (dp, cp) != (expect_held, 0):
        out.append(
            Discrepancy(
                "pending_mismatch",
                account,
                f"debits_pending {dp} vs pending holds {expect_held}; credits_pending {cp} vs 0",
            )
        )
    return out
