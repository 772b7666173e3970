"""The ledger's errors. Every operation raises only these (mapped to gRPC codes by
``servicer``):

- ``InvalidArgument``: the request is malformed; nothing was written.
- ``NotFound``: an account or reservation does not exist.
- ``InsufficientFunds``: a debit account cannot cover the amount. This outcome is
  stored under the idempotency id: a replay fails the same way, even after a top-up.
- ``OutOfRange``: an amount above the one-amount maximum, or a movement that would take
  an account counter past int64 (``limits``); nothing was written.
- ``AccountClosed``: the account was closed (a revoked key): it takes no new holds and no
  new money. Nothing is written (a closed account never reopens, so a retry fails alike).
- ``Conflict``: an idempotency id was reused with other fields, or the reservation is
  in a state that forbids the operation (e.g. settling a voided one).
"""

from __future__ import annotations


class LedgerError(Exception):
    pass


class InvalidArgument(LedgerError):
    pass


class NotFound(LedgerError):
    pass


class InsufficientFunds(LedgerError):
    pass


class Conflict(LedgerError):
    pass


class OutOfRange(LedgerError):
    pass


class AccountClosed(LedgerError):
    pass
