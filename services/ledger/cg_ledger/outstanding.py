"""What the ledger holds right now, as gauges: the pending reservations (one per request
in flight) and budget leases (a proxy worker's slice of a payer), counted and summed, read
on a timer. Every ledger replica reads the same database and reports the same figures:
aggregate them with ``max``, not ``sum``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Gauge

from cg_ledger.txrunner import Runner

log = logging.getLogger(__name__)

OUTSTANDING = Gauge("cg_ledger_reservations_outstanding", "Pending holds by kind (request, lease)", ["kind"])
HELD_UCR = Gauge("cg_ledger_reservations_held_ucr", "Micro-credits held by pending holds, by kind", ["kind"])
KINDS = ("request", "lease")
_QUERY = "SELECT kind, count(*), coalesce(sum(held_ucr), 0) FROM reservations WHERE status = 'pending' GROUP BY kind"


def _pending(rows: Any) -> list[tuple[str, int, int]]:
    return [(str(k), int(n), int(held)) for k, n, held in rows.cur.execute(_QUERY).fetchall()]


async def refresh(db: Runner) -> None:
    found = {kind: (n, held) for kind, n, held in await db.read(_pending)}
    for kind in {*KINDS, *found}:
        n, held = found.get(kind, (0, 0))
        OUTSTANDING.labels(kind).set(n)
        HELD_UCR.labels(kind).set(held)


async def refresh_forever(db: Runner, every_s: float) -> None:
    while True:
        try:
            await refresh(db)
        except Exception as e:  # the database health check says why; try again next round
            log.debug("outstanding holds not read", extra={"error": repr(e)})
        await asyncio.sleep(every_s)
