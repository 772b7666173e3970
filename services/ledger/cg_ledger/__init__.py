"""The ledger service: double-entry credit accounts, two-phase reservations, pricing.

- ``pricing``: the one place money is computed (Decimal rates, integer millionths,
  rounded up once per charge); ``charges``: what a reservation holds and charges.
- ``limits``: every bound (one amount at most 10^15, string lengths) and its check.
- ``accounts``: account ids, kinds and units (the usage sink's shards).
- ``models``: accounts (TigerBeetle-style pending/posted counters), immutable
  transfers, reservations (the migrations' schema); ``sql``: every statement that moves
  money, written once; ``rows``: the row primitives that run them; ``txrunner``: where
  their transactions run (threads, on the driver; the one pool); ``idempotent``: once
  per id, a replay answered from the stored outcome.
- ``book``: deposits, grants, key funding and refunds (closing a key's account), key
  deposits; ``balances``: balances and statements; ``reservations``: reserve, settle,
  void, expire; ``settlebatch``: a batch of settlements in one transaction.
- ``audit``: every account and the audit of the books; ``admin``: its gRPC service.
- ``errors``: what every operation may raise (crash points for tests: ``cglib.faults``);
  ``dberrors``: what a database error means (a race, or out of range), in one place.
- ``servicer``: proto <-> domain, errors -> status codes.
"""
