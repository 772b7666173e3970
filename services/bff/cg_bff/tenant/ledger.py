"""What the tenant API reads from the ledger (and the usage history): account names,
balances, the partner's statement, what a partner's requests cost this month.

Account names are the ledger's (README, "The ledger"): ``partner:<id>`` (credits),
``customer:<id>`` (AI credits), ``keydeposit:<key id>`` (a customer-created key's deposit).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from sqlalchemy import func, select

from cg_bff.models.usage import HOURLY
from cg_bff.schemas.money import Credits, at_ms
from cg_bff.schemas.partner import Effect, StatementEntry
from cg_bff.state import BffState
from cg_bff.tenant import ledger_of
from creditgate.ledger.v1 import ledger_pb2 as lpb

# The ledger's statement page at most (ListTransfers).
MAX_LEDGER_PAGE = 1000
# Accounts per GetBalances call at most.
MAX_BALANCES = 1000
_HOLDS: dict[str, Effect] = {"pending": "hold", "void": "release", "expire": "release"}


def partner_account(partner_id: str) -> str:
    return f"partner:{partner_id}"


def customer_account(customer_id: str) -> str:
    return f"customer:{customer_id}"


def deposit_account(key_id: str) -> str:
    return f"keydeposit:{key_id}"


async def balances(state: BffState, accounts: list[str]) -> dict[str, lpb.Balance]:
    """The balances of these accounts; one the ledger has never seen is left out (it has
    had no movement: zero)."""
    b = state.backends
    found: dict[str, lpb.Balance] = {}
    for i in range(0, len(accounts), MAX_BALANCES):
        chunk = accounts[i : i + MAX_BALANCES]
        out = await b.call(ledger_of(state).GetBalances, lpb.GetBalancesRequest(accounts=chunk))
        found.update((x.account, x) for x in out.balances)
    return found


async def balance(state: BffState, account: str) -> lpb.Balance | None:
    return (await balances(state, [account])).get(account)


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def cost_since_ucr(state: BffState, partner_id: str, since: datetime) -> int:
    """What the partner's requests cost since ``since`` (an hour's start), from the usage
    history's hourly sums (``models.usage``, the usage engineer's read model)."""
    since_ms = int(since.timestamp() * 1000)
    q = select(func.coalesce(func.sum(HOURLY.c.cost_ucr), 0)).where(
        HOURLY.c.partner_id == partner_id, HOURLY.c.hour_ms >= since_ms
    )
    async with state.engine.connect() as conn:
        return int((await conn.execute(q)).scalar_one())


def statement_entry(account: str, t: lpb.LedgerTransfer) -> StatementEntry:
    """A ledger transfer as a movement of ``account``: signed from that account's side."""
    incoming = t.credit_account == account
    effect = _HOLDS.get(t.kind, "posted")
    if effect == "posted":
        signed = t.amount if incoming else -t.amount
    else:  # a hold sets credits aside, a release gives them back; neither moves the balance
        signed = -t.amount if effect == "hold" else t.amount
    other = t.debit_account if incoming else t.credit_account
    key_id = None
    for prefix in ("key:", "keydeposit:"):
        if other.startswith(prefix):
            key_id = other.removeprefix(prefix)
    return StatementEntry(
        id=t.id,
        at=at_ms(t.created_at_ms),
        kind=t.kind,
        effect=effect,
        amount=Credits.of(signed),
        counterparty=other,
        key_id=key_id,
        request_id=t.request_id or None,
        memo=t.memo,
    )


async def statement(
    state: BffState,
    account: str,
    token: str,
    since_ms: int | None = None,
    before_ms: int | None = None,
    page_size: int = MAX_LEDGER_PAGE,
) -> AsyncIterator[tuple[StatementEntry, str]]:
    """The account's movements newest first, from ``token`` on, each with the ledger token
    that continues *after* it; those at or after ``before_ms`` are skipped, and it stops at
    the first one before ``since_ms``."""
    b = state.backends
    while True:
        page = await b.call(
            ledger_of(state).ListTransfers,
            lpb.ListTransfersRequest(account=account, page_size=page_size, page_token=token),
            what="statement",
        )
        for t in page.transfers:
            if since_ms is not None and t.created_at_ms < since_ms:
                return
            if before_ms is None or t.created_at_ms < before_ms:
                yield statement_entry(account, t), t.id
        if not page.next_page_token:
            return
        token = page.next_page_token
