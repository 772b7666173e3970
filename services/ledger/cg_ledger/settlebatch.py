"""A batch of settlements (``SettleBatch``) in one transaction, with as few round trips as
the driver allows, each settlement still idempotent by request id and failing alone.

The proxy settles in batches (up to 256). Settled one by one, each costs a transaction
of about six statements; here the common case of a whole batch costs a handful:

1. the batch's reservation rows, locked at once (in request-id order);
2. each settlement is sorted: a replay (already posted) or a refusal (no such
   reservation: ``NotFound``; voided: ``Conflict``; a charge too large to price:
   ``OutOfRange``) is answered at once; a *plain* one — a pending hold, a charge within
   it (and within the customer's hold), an open account — is settled here; any other
   (an expired hold, a charge above the hold, a closed account, a request id seen twice)
   is left for ``Reservations.settle``, which runs it as the single call does, in its
   own transaction, once this one has committed;
3. the payers' and then the customers' account rows, locked in id order (their
   ``closed_to`` read under the lock);
4. the plain ones' writes, each statement once for the whole batch (``Rows.many``:
   ``executemany``, which psycopg sends as one pipeline, one round trip; on PostgreSQL
   the releases, the reservation rows and the transfers as one statement over arrays
   each, rows found by index): a release per account (the holds and charges of its
   settlements summed: the counters add up the same), a credit per sink (usage shards,
   then revenue accounts, each summed, in id order), the reservation rows, the transfers.

The money rules are ``Reservations._settle``'s: from a hold of ``held`` a charge of
``charge <= held`` posts ``charge`` and frees the rest; what the payer paid is credited
to the request's usage shard; the same transfers (ids, kinds, amounts, memo) are stored.
The lock order is the single settlement's: reservations, payers, customers, usage
shards, revenue accounts. If a write of step 4 fails (a sink at the int64 edge), the
whole transaction rolls back and every plain settlement is run on its own instead: one
bad settlement never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cg_ledger import accounts, sql
from cg_ledger.accounts import usage_shard
from cg_ledger.charges import billing_of, costs, tokens
from cg_ledger.errors import Conflict, LedgerError, NotFound
from cg_ledger.limits import check_id
from cg_ledger.reservations import Reservations, SettleOutcome, settle_memo, settle_outcome, settled_values
from cg_ledger.rows import Rows, now_ms
from cglib.faults import crash_point

log = logging.getLogger(__name__)

Outcome = SettleOutcome | Exception


@dataclass(frozen=True)
class Settlement:
    request_id: str
    input_tokens: int
    output_tokens: int
    usage_source: str


class _WriteFailed(Exception):
    """Internal: a batched write changed fewer rows than it should have."""


@dataclass
class _Plain:
    """What the batch writes for one plain settlement."""

    s: Settlement
    r: Any  # the reservation row
    charge: int
    charge_uai: int
    values: dict


async def settle_batch(res: Reservations, batch: list[Settlement]) -> list[Outcome]:
    """One outcome per settlement, in order: a ``SettleOutcome`` or the error it failed with."""
    outcomes: dict[int, Outcome] = {}
    valid: dict[int, Settlement] = {}
    for i, s in enumerate(batch):
        try:
            check_id(s.request_id, "request_id")
            tokens(s.input_tokens, "input_tokens")
            tokens(s.output_tokens, "output_tokens")
            valid[i] = s
        except LedgerError as e:
            outcomes[i] = e
    rest = list(valid)
    if valid:
        try:
            done, sinks = await res.db.run(_settle_plain, res, valid)
        except Exception:
            log.exception("batched settlement failed; settling one by one", extra={"settlements": len(valid)})
        else:
            crash_point("settle:after_commit")
            # only now, committed, do they exist for every other transaction: a batch that
            # skipped creating them before could credit rows it cannot see yet
            res.known_sinks.update(sinks)
            outcomes.update(done)
            rest = [i for i in valid if i not in done]
    singles = await asyncio.gather(
        *(res.settle(s.request_id, s.input_tokens, s.output_tokens, s.usage_source) for s in map(valid.get, rest) if s),
        return_exceptions=True,
    )
    for i, single in zip(rest, singles, strict=True):
        outcomes[i] = single if isinstance(single, SettleOutcome | Exception) else RuntimeError(repr(single))
    return [outcomes[i] for i in range(len(batch))]


def _settle_plain(db: Rows, res: Reservations, batch: dict[int, Settlement]) -> tuple[dict[int, Outcome], list[str]]:
    """Steps 1-4 in one transaction. Returns the outcomes it decided (the indexes it left
    out are for ``Reservations.settle``) and the sink accounts it credited."""
    db.by_key_only()
    rows = {r.request_id: r for r in db.reservations((s.request_id for s in batch.values()), lock=True)}
    outcomes: dict[int, Outcome] = {}
    plain: dict[int, _Plain] = {}
    seen: set[str] = set()
    for i, s in batch.items():
        rid = s.request_id
        r = rows.get(rid)
        if rid in seen:
            continue  # settled once below; the second one replays it, on its own
        seen.add(rid)
        if r is None:
            outcomes[i] = NotFound(f"reservation {rid!r} not found")
        elif r.kind == "lease":
            outcomes[i] = Conflict(f"{rid!r} is a lease: its requests settle with SettleLeased")
        elif r.status == "posted":
            outcomes[i] = settle_outcome(r, replayed=True)
        elif r.status == "voided":
            outcomes[i] = Conflict(f"reservation {rid!r} was voided")
        elif r.status == "pending":
            try:
                charge, uai = costs(
                    r.input_usd_per_mtok, r.output_usd_per_mtok, billing_of(r), s.input_tokens, s.output_tokens
                )
            except LedgerError as e:
                outcomes[i] = e
                continue
            if charge <= r.held_ucr and uai <= r.customer_held_uai:
                values = settled_values(charge, charge, uai, uai, s.usage_source, s.input_tokens, s.output_tokens)
                plain[i] = _Plain(s, r, charge, uai, values)
    closed = _closed(db, [p.r.account for p in plain.values()]) | _closed(
        db, [p.r.customer_account for p in plain.values() if p.r.customer_account]
    )
    plain = {i: p for i, p in plain.items() if p.r.account not in closed and p.r.customer_account not in closed}
    sinks = _write(db, res, list(plain.values())) if plain else []
    if plain:
        crash_point("settle:before_commit")
    for i, p in plain.items():
        outcomes[i] = settle_outcome(p.r, replayed=False, held=p.r.held_ucr, values=p.values)
    return outcomes, sinks


def _closed(db: Rows, ids: list[str]) -> set[str]:
    """Locks these accounts (in id order) and returns the closed ones among them."""
    if not ids:
        return set()
    return {row.id for row in db.lock_accounts(ids) if row.closed_to}


def _write(db: Rows, res: Reservations, plain: list[_Plain]) -> list[str]:
    """The batch's writes; returns the sink accounts credited."""
    released: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # account -> [held, posted]
    customers: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    shards: dict[str, int] = defaultdict(int)
    revenue: dict[str, int] = defaultdict(int)
    for p in plain:
        released[p.r.account][0] += p.r.held_ucr
        released[p.r.account][1] += p.charge
        shards[usage_shard(p.s.request_id)] += p.charge
        if p.r.customer_account:
            customers[p.r.customer_account][0] += p.r.customer_held_uai
            customers[p.r.customer_account][1] += p.charge_uai
            revenue[p.r.revenue_account] += p.charge_uai
    for holds in (released, customers):
        releases = [sql.release(a, h, q).params for a, (h, q) in sorted(holds.items())]
        _expect(db.many("release", releases, locked=True), len(holds))
    sinks = [*sorted(shards.items()), *sorted(revenue.items())]
    now = now_ms()
    new = [sql.new_account(accounts.parse(a), now) for a, _ in sinks if a not in res.known_sinks]
    db.many("ensure_account", new)
    _expect(db.many("credit", [sql.credit(a, amount).params for a, amount in sinks]), len(sinks))
    db.many("settled", [dict(rid=p.s.request_id, **p.values) for p in plain], locked=True)
    transfers = []
    for p in plain:
        rid, r = p.s.request_id, p.r
        memo = settle_memo(r, p.s.usage_source, p.s.input_tokens, p.s.output_tokens)
        shard = usage_shard(rid)
        transfers.append(sql.new_transfer(f"settle:{rid}", "post", r.account, shard, p.charge, rid, memo, "ok", now))
        if r.customer_account:
            transfers.append(
                sql.new_transfer(
                    f"settle:{rid}:customer",
                    "post",
                    r.customer_account,
                    r.revenue_account,
                    p.charge_uai,
                    rid,
                    memo,
                    "ok",
                    now,
                )
            )
    db.many("insert_transfer", transfers)
    return [a for a, _ in sinks]


def _expect(changed: int, rows: int) -> None:
    if changed != rows:
        raise _WriteFailed(f"a batched write changed {changed} rows, not {rows}")
