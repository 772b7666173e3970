"""The ledger service: double-entry credit accounts, two-phase reservations, pricing.

- ``pricing``: the one place money is computed (Decimal rates, integer millionths,
  rounded up once per charge).
- ``accounts``: account ids, kinds and units.
- ``models``: accounts (TigerBeetle-style pending/posted counters), immutable
  transfers, reservations; ``store``: row-level primitives and the lock order.
- ``book``: deposits, grants, key funding and refunds, key deposits, balances,
  statements; ``reservations``: reserve, settle, void, expire.
- ``errors``: what every operation may raise (crash points for tests: ``cglib.faults``).
- ``servicer``: proto <-> domain, errors -> status codes.
"""
