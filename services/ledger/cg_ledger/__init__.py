"""The ledger service: double-entry credit accounts, two-phase reservations, pricing.

- ``pricing``: the one place money is computed (Decimal rates, integer millionths,
  rounded up once per charge); ``charges``: what a reservation holds and charges.
- ``limits``: every bound (one amount at most 10^15, string lengths) and its check.
- ``accounts``: account ids, kinds and units.
- ``models``: accounts (TigerBeetle-style pending/posted counters), immutable
  transfers, reservations; ``sql``: every statement that moves money, written once;
  ``store`` (async, the book) and ``hotsql`` (sync, the hot path) run them.
- ``book``: deposits, grants, key funding and refunds (closing a key's account), key
  deposits; ``balances``: balances and statements; ``reservations``: reserve, settle,
  void, expire.
- ``audit``: every account and the audit of the books; ``admin``: its gRPC service.
- ``errors``: what every operation may raise (crash points for tests: ``cglib.faults``);
  ``dberrors``: what a database error means (a race, or out of range).
- ``servicer``: proto <-> domain, errors -> status codes.
"""
