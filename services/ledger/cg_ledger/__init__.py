"""The ledger service: double-entry credit accounts, two-phase reservations, pricing.

- ``pricing``: the one place money is computed (Decimal rates, integer micro-credits,
  rounded up once per charge).
- ``models``: accounts (TigerBeetle-style pending/posted counters), immutable
  transfers, reservations.
- ``book``: the operations (deposit, transfer, reserve, settle, void) as atomic
  transactions; raises ``LedgerError`` subclasses.
- ``servicer``: proto <-> domain, errors -> status codes.
"""
