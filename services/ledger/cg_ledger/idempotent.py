"""Once per id: the one way every ledger operation is made idempotent.

An operation's id (a caller's idempotency id, or a request id) is permanent: a replay
returns the stored outcome, a failure included. ``once`` runs three transactions of the
operation, each a function of a ``Rows`` (``txrunner``):

- ``attempt``: finds a stored outcome under the id and replays it, or applies the
  operation and stores its outcome, in one transaction;
- ``refused``: after ``attempt`` raised ``InsufficientFunds`` (its transaction rolled
  back), stores that refusal under the id, so a replay fails the same way even after a
  top-up. If a concurrent call stored an outcome first, that one stands;
- ``after_race``: after ``attempt`` lost a unique insert to a concurrent call with the
  same id (``dberrors.Duplicate``), answers from what that call stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from cg_ledger.dberrors import Duplicate
from cg_ledger.errors import InsufficientFunds
from cg_ledger.rows import Rows
from cg_ledger.txrunner import Runner

T = TypeVar("T")


async def once(
    db: Runner,
    attempt: Callable[[Rows], T],
    refused: Callable[[Rows], Any],
    after_race: Callable[[Rows], T],
) -> T:
    try:
        return await db.run(attempt)
    except InsufficientFunds:
        with contextlib.suppress(Duplicate):
            await db.run(refused)
        raise
    except Duplicate:
        return await db.run(after_race)
