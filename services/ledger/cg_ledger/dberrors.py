"""What a database error means to the ledger, whichever driver raised it.

Two kinds matter, and must never be confused:
- a unique violation: a concurrent call with the same idempotency id (or request id)
  committed first; the caller answers from what that one stored;
- a range error: a counter or amount that would leave int64 or fail a CHECK constraint
  (the no-overdraft rule, non-negative counters, integer-typed columns on SQLite). The
  ledger's own guards refuse these before the database sees them (``limits``, ``sql``);
  this is the safety net behind them, and it becomes ``OutOfRange``, never an internal
  error.

Drivers: sqlite3 (``sqlite_errorname``, and ``OverflowError`` for a Python int that
does not fit a 64-bit parameter) and psycopg (SQLSTATE); SQLAlchemy (the migrations, the
tests) wraps either, with the driver's error in ``.orig``.

``translated`` is the one place a driver's error becomes the ledger's: ``txrunner``
applies it to whatever a transaction raised, so no other module imports a driver.
"""

from __future__ import annotations

from collections.abc import Iterator

from cg_ledger.errors import OutOfRange

_UNIQUE = {"23505", "SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}
# numeric_value_out_of_range, check_violation; SQLite: a CHECK constraint
_RANGE = {"22003", "23514", "SQLITE_CONSTRAINT_CHECK"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "orig", None), e.__cause__]


def _codes(exc: BaseException) -> set[str]:
    codes = set()
    for e in _chain(exc):
        for attr in ("sqlstate", "sqlite_errorname"):
            value = getattr(e, attr, None)
            if isinstance(value, str):
                codes.add(value)
    return codes


class Duplicate(Exception):
    """Internal: a unique constraint refused the write, because a concurrent call with
    the same id committed first. ``idempotent.once`` answers from what that one stored;
    anywhere else it is an internal error."""


def is_unique_violation(exc: BaseException) -> bool:
    return bool(_codes(exc) & _UNIQUE)


def out_of_range(exc: BaseException) -> OutOfRange | None:
    """The ``OutOfRange`` a database error stands for, or None if it is something else."""
    if isinstance(exc, OverflowError) or any(isinstance(e, OverflowError) for e in _chain(exc)):
        return OutOfRange("an amount does not fit a 64-bit integer; nothing was written")
    if _codes(exc) & _RANGE:
        return OutOfRange("the movement would take an account out of range; nothing was written")
    return None


def translated(exc: Exception) -> Exception:
    """What to raise for an error a transaction ended with: ``OutOfRange``, ``Duplicate``
    (each with the driver's error as its cause), or the error itself."""
    err: Exception | None = out_of_range(exc)
    if err is None and is_unique_violation(exc):
        err = Duplicate(str(exc))
    if err is None:
        return exc
    err.__cause__ = exc
    return err
