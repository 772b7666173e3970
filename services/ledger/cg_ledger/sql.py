"""The ledger's SQL, written once: every statement that reads or moves money.

One layer runs these texts: ``rows`` (the row primitives, on the driver's own cursor,
in a transaction ``txrunner`` runs in a worker thread), for every operation of the
ledger. A money rule — no overdraft, no counter past int64, no hold on a closed
account — is one statement here, and its parameters come from one function here
(``hold``, ``debit``, ``credit``, ``release``). A batch of settlements (``settlebatch``)
runs the same texts with ``executemany``: ``BATCH`` holds them without ``RETURNING``
(sqlite3's ``executemany`` cannot return rows), derived here, not written again; on
PostgreSQL the holds it releases, the reservations it marks settled and the transfers it
journals are one statement over parameter arrays each (``PG_ARRAYS``, the UPDATEs derived
from ``BATCH`` too).

The guards, per statement:
- ``hold`` (pending debit): the account is open, guarded, and has the amount available.
- ``debit`` (posted): a guarded account (``debits_must_not_exceed_credits``) keeps
  debits <= credits, so its debit counters are bounded by its credits; an unguarded one
  (``external:*``) instead may not push ``debits_posted + debits_pending`` past int64.
- ``credit``: ``credits_posted`` may not pass int64.
- ``release`` (posts part of a hold, frees the rest): cannot overflow (posted <= held);
  it returns the account's ``closed_to`` so the caller forwards what was freed without
  another read.
A refused guard updates no row (rowcount 0); the caller raises and the transaction rolls
back, so nothing is written.

Each statement is valid SQLite (>= 3.35, for RETURNING) and PostgreSQL, with ``:name``
parameters (``psycopg_style`` rewrites them for psycopg). Parameters are only compared
with or added to a column, never combined with each other, so PostgreSQL types them from
the column on every driver; the limit a guard needs (``MAX_COUNTER - amount``) is
computed here, in Python, where it cannot overflow.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import NamedTuple

from cg_ledger.accounts import AccountId
from cg_ledger.limits import MAX_COUNTER

_AVAILABLE = (
    "SELECT credits_posted - debits_posted - debits_pending AS available, closed_to FROM accounts WHERE id = :id"
)
_RESERVATION = "SELECT * FROM reservations WHERE request_id = :rid"

STATEMENTS = {
    # -- accounts ------------------------------------------------------------------
    "available": _AVAILABLE,
    "available_lock": _AVAILABLE + " FOR UPDATE",
    "exists": "SELECT 1 FROM accounts WHERE id = :id",
    "ensure_account": (
        "INSERT INTO accounts (id, kind, unit, debits_must_not_exceed_credits, debits_pending, debits_posted,"
        " credits_pending, credits_posted, closed_to, created_at_ms)"
        " VALUES (:id, :kind, :unit, :guarded, 0, 0, 0, 0, '', :now) ON CONFLICT (id) DO NOTHING"
    ),
    "hold": (
        "UPDATE accounts SET debits_pending = debits_pending + :amount"
        " WHERE id = :id AND closed_to = '' AND debits_must_not_exceed_credits"
        " AND credits_posted - debits_posted - debits_pending >= :amount"
    ),
    "debit": (
        "UPDATE accounts SET debits_posted = debits_posted + :amount"
        " WHERE id = :id AND CASE WHEN debits_must_not_exceed_credits"
        " THEN credits_posted - debits_posted - debits_pending >= :amount"
        " ELSE debits_posted <= :limit - debits_pending END"
    ),
    "credit": (
        "UPDATE accounts SET credits_posted = credits_posted + :amount WHERE id = :id AND credits_posted <= :limit"
    ),
    "release": (
        "UPDATE accounts SET debits_pending = debits_pending - :held, debits_posted = debits_posted + :posted"
        " WHERE id = :id RETURNING closed_to"
    ),
    "close": "UPDATE accounts SET closed_to = :closed_to WHERE id = :id AND closed_to = ''",
    # -- transfers -----------------------------------------------------------------
    "transfer": (
        "SELECT id, idempotency_id, kind, outcome, debit_account, credit_account, amount_ucr, request_id, memo"
        " FROM transfers WHERE idempotency_id = :iid"
    ),
    "insert_transfer": (
        "INSERT INTO transfers (idempotency_id, kind, outcome, debit_account, credit_account, amount_ucr,"
        " request_id, memo, created_at_ms)"
        " VALUES (:iid, :kind, :outcome, :debit, :credit, :amount, :rid, :memo, :now) RETURNING id"
    ),
    # -- reservations (the hot path) -----------------------------------------------
    "reservation": _RESERVATION,
    "reservation_lock": _RESERVATION + " FOR UPDATE",
    "insert_reservation": (
        "INSERT INTO reservations (request_id, account, credit_account, model, input_usd_per_mtok,"
        " output_usd_per_mtok, price_book_version, held_ucr, customer_account, revenue_account,"
        " profit_multiplier, price_per_ai_credit_cents, floor_usd_per_mtok, customer_held_uai,"
        " customer_charged_uai, customer_unpaid_uai, input_tokens, output_tokens, status, charged_ucr,"
        " unpaid_ucr, usage_source, expires_at_ms, created_at_ms, rate_key, kind, lease_id)"
        " VALUES (:request_id, :account, :credit_account, :model, :input_usd_per_mtok, :output_usd_per_mtok,"
        " :price_book_version, :held_ucr, :customer_account, :revenue_account, :profit_multiplier,"
        " :price_per_ai_credit_cents, :floor_usd_per_mtok, :customer_held_uai, 0, 0, 0, 0, 'pending', 0, 0, '',"
        " :expires_at_ms, :created_at_ms, :rate_key, :kind, '')"
    ),
    # -- leases (``leases``): a lease is a pending reservation row of kind 'lease' ------
    # A request settled from a lease: its row, posted at once (the hold was the lease's).
    "insert_leased": (
        "INSERT INTO reservations (request_id, account, credit_account, model, input_usd_per_mtok,"
        " output_usd_per_mtok, price_book_version, held_ucr, customer_account, revenue_account,"
        " profit_multiplier, price_per_ai_credit_cents, floor_usd_per_mtok, customer_held_uai,"
        " customer_charged_uai, customer_unpaid_uai, input_tokens, output_tokens, status, charged_ucr,"
        " unpaid_ucr, usage_source, expires_at_ms, created_at_ms, rate_key, kind, lease_id)"
        " VALUES (:request_id, :account, :credit_account, :model, :input_usd_per_mtok, :output_usd_per_mtok,"
        " :price_book_version, :held_ucr, :customer_account, :revenue_account, :profit_multiplier,"
        " :price_per_ai_credit_cents, :floor_usd_per_mtok, :customer_held_uai, :customer_charged_uai,"
        " :customer_unpaid_uai, :input_tokens, :output_tokens, 'posted', :charged_ucr, :unpaid_ucr,"
        " :usage_source, :created_at_ms, :created_at_ms, :rate_key, 'request', :lease_id)"
    ),
    # What a lease holds grows (acquire, extend) or shrinks (settlements, releases) by a delta.
    "lease_held": (
        "UPDATE reservations SET held_ucr = held_ucr + :ucr, customer_held_uai = customer_held_uai + :uai"
        " WHERE request_id = :rid AND kind = 'lease'"
    ),
    "lease_expiry": "UPDATE reservations SET expires_at_ms = :expires WHERE request_id = :rid AND kind = 'lease'",
    "settled": (
        "UPDATE reservations SET status = 'posted', charged_ucr = :charged_ucr, unpaid_ucr = :unpaid_ucr,"
        " customer_charged_uai = :customer_charged_uai, customer_unpaid_uai = :customer_unpaid_uai,"
        " usage_source = :usage_source, input_tokens = :input_tokens, output_tokens = :output_tokens"
        " WHERE request_id = :rid"
    ),
    "status": "UPDATE reservations SET status = :status WHERE request_id = :rid",
    "due": ("SELECT request_id FROM reservations WHERE status = 'pending' AND expires_at_ms <= :now LIMIT :limit"),
    # A rate-limited key's window (``ratelimits``), oldest end first: its reservations (1
    # request each; a request settled from a lease, 0: its slot counted it) and its request
    # slot grants (``requests`` each, ending at their deadline). Indexes (rate_key,
    # created_at_ms) and (rate_key, end_ms).
    "window": (
        "SELECT created_at_ms AS end_ms, CASE WHEN lease_id = '' THEN 1 ELSE 0 END AS n,"
        " input_tokens + output_tokens AS tokens FROM reservations"
        " WHERE rate_key = :key AND created_at_ms > :since AND kind = 'request'"
        " UNION ALL SELECT end_ms, requests, 0 FROM rate_slots WHERE rate_key = :key AND end_ms > :since"
        " ORDER BY end_ms"
    ),
    "insert_slots": (
        "INSERT INTO rate_slots (grant_id, rate_key, lease_id, requests, end_ms, created_at_ms)"
        " VALUES (:gid, :key, :lease_id, :requests, :end_ms, :now)"
    ),
    "slots": "SELECT requests, end_ms FROM rate_slots WHERE grant_id = :gid",
    # Unused slots given back (``ReleaseLease``): the lease's grants still open, newest first.
    "open_slots": (
        "SELECT grant_id, requests FROM rate_slots WHERE lease_id = :lease_id AND end_ms > :now AND requests > 0"
        " ORDER BY end_ms DESC"
    ),
    "return_slots": "UPDATE rate_slots SET requests = requests - :n WHERE grant_id = :gid AND requests >= :n",
}


# executemany forms (no RETURNING) of the statements a batch of settlements runs
BATCH = {
    name: STATEMENTS[name].partition(" RETURNING ")[0]
    for name in ("release", "credit", "ensure_account", "settled", "insert_transfer", "insert_leased", "lease_held")
}


# PostgreSQL: batch writes as ONE statement each, every parameter an array (``unnest``),
# instead of one execution per row: a batch of 256 settlements across 256 keys releases
# its holds with one UPDATE of 256 account rows, not 256 statements (docs/benchmarks.md).
# The UPDATEs are ``BATCH``'s texts over arrays (``_update_over_arrays``), so a money rule
# is still written once; the INSERT of transfers only journals rows. Only rows the
# transaction has locked already (in key order: the batch's reservations, its payers) are
# updated this way, since the order in which one statement reaches its rows is the plan's;
# credits to shared sinks stay ``BATCH``'s, one execution per sink in id order. An UPDATE
# over arrays changes each row once, so ``rows.Rows.many`` uses it only when the rows'
# keys are distinct (the callers sum per account), and ``BATCH``'s form otherwise.
_TRANSFER_COLUMNS = {
    "iid": "text",
    "kind": "text",
    "outcome": "text",
    "debit": "text",
    "credit": "text",
    "amount": "bigint",
    "rid": "text",
    "memo": "text",
    "now": "bigint",
}
_PARAM = re.compile(r"(?<!:):(\w+)")


def _unnest(columns: dict[str, str], prefix: str = "") -> str:
    arrays = ", ".join(f":{name}::{kind}[]" for name, kind in columns.items())
    return f"unnest({arrays}) AS v({', '.join(prefix + name for name in columns)})"


def _update_over_arrays(name: str, key: str, types: dict[str, str]) -> str:
    """``BATCH[name]``, an ``UPDATE ... WHERE <column> = :key ...``, as one statement over
    parameter arrays: every ``:p`` becomes ``v.p_p``, a column of ``unnest`` over the
    arrays ``:p``; ``<column> = ANY(:key)`` lets PostgreSQL find the rows by index (not a
    hash join over the whole table)."""
    text = BATCH[name]
    column = re.search(rf"WHERE (\w+) = :{key}\b", text)
    params = _PARAM.findall(text)
    if column is None or set(params) != set(types):
        raise ValueError(f"{name}: not an UPDATE by :{key} with parameters {sorted(types)}")
    head, _, where = text.partition(" WHERE ")
    head, where = (_PARAM.sub(r"v.p_\1", part) for part in (head, where))
    return f"{head} FROM {_unnest(types, 'p_')} WHERE {where} AND {column.group(1)} = ANY(:{key}::{types[key]}[])"


PG_ARRAYS = {
    "release": _update_over_arrays("release", "id", {"id": "text", "held": "bigint", "posted": "bigint"}),
    "settled": _update_over_arrays(
        "settled",
        "rid",
        {
            "rid": "text",
            "charged_ucr": "bigint",
            "unpaid_ucr": "bigint",
            "customer_charged_uai": "bigint",
            "customer_unpaid_uai": "bigint",
            "usage_source": "text",
            "input_tokens": "bigint",
            "output_tokens": "bigint",
        },
    ),
    "insert_transfer": (
        "INSERT INTO transfers (idempotency_id, kind, outcome, debit_account, credit_account, amount_ucr,"
        f" request_id, memo, created_at_ms) SELECT {', '.join(_TRANSFER_COLUMNS)} FROM {_unnest(_TRANSFER_COLUMNS)}"
    ),
}
# The key of each UPDATE over arrays: its rows must be distinct in it.
PG_ARRAY_KEYS = {"release": "id", "settled": "rid"}

# PostgreSQL: a set of rows locked in key order with one array parameter (one statement
# text whatever the set's size, so psycopg prepares it once).
PG_LOCK = {
    "accounts": "SELECT id, closed_to FROM accounts WHERE id = ANY(:ids::text[]) ORDER BY id FOR UPDATE",
    "reservations": "SELECT * FROM reservations WHERE request_id = ANY(:ids::text[]) ORDER BY request_id FOR UPDATE",
}


class Stmt(NamedTuple):
    name: str
    params: dict


def hold(account: str, amount: int) -> Stmt:
    return Stmt("hold", {"id": account, "amount": amount})


def debit(account: str, amount: int) -> Stmt:
    return Stmt("debit", {"id": account, "amount": amount, "limit": MAX_COUNTER - amount})


def credit(account: str, amount: int) -> Stmt:
    return Stmt("credit", {"id": account, "amount": amount, "limit": MAX_COUNTER - amount})


def release(account: str, held: int, posted: int) -> Stmt:
    """Frees ``held`` from the pending debits and posts ``posted`` of it (``posted <= held``)."""
    if not 0 <= posted <= held:
        raise ValueError(f"release: posted {posted} must be between 0 and held {held}")
    return Stmt("release", {"id": account, "held": held, "posted": posted})


@functools.lru_cache(maxsize=512)
def psycopg_text(text: str) -> str:
    """``:name`` -> ``%(name)s`` (psycopg's named parameters); ``%`` -> ``%%``."""
    return re.sub(r"(?<!:):(\w+)", r"%(\1)s", text.replace("%", "%%"))


def new_account(account: AccountId, now_ms: int) -> dict:
    """``ensure_account``'s parameters: only ``external:*`` accounts may go below zero."""
    return dict(id=account.id, kind=account.kind, unit=account.unit, guarded=account.kind != "external", now=now_ms)


def new_transfer(
    idempotency_id: str,
    kind: str,
    debit: str,
    credit: str,
    amount: int,
    request_id: str | None,
    memo: str,
    outcome: str,
    now_ms: int,
) -> dict:
    """``insert_transfer``'s parameters."""
    return dict(
        iid=idempotency_id,
        kind=kind,
        outcome=outcome,
        debit=debit,
        credit=credit,
        amount=amount,
        rid=request_id,
        memo=memo,
        now=now_ms,
    )


def psycopg_style(statements: dict[str, str]) -> dict[str, str]:
    return {name: psycopg_text(text) for name, text in statements.items()}


def in_list(prefix: str, values: Iterable[str]) -> tuple[str, dict[str, str]]:
    """``(":p0, :p1, ...", {"p0": ..., "p1": ...})``: an ``IN (...)`` list of parameters
    (SQLite has no arrays; the same text runs on both)."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    # an empty list is NULL, which nothing equals: "IN ()" is an error on PostgreSQL
    return ", ".join(f":{name}" for name in params) or "NULL", params
