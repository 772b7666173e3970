"""The keys service: partners, virtual keys and the model catalog, behind gRPC.

- ``settings``: configuration from ``CG_KEYS_*`` variables.
- ``catalog``: the versioned model catalog (``catalog.yaml``).
- ``models``: the tables (migrations under ``migrations/``); ``repository``: the queries,
  and ``locked``, the one "lock the key's row, change it, commit" every change goes through.
- ``access``: who may touch what; ``validation`` and ``keyfields``: input checks.
- ``tenants``: partners, customers, self-service settings; ``visibility``: whether a
  customer sees AI Gateway (the three conditions).
- ``issuing``: creating keys and rotating secrets, once per idempotency key.
- ``money``: the money protocol with the ledger (create, activate, top-up, revoke,
  reconcile); ``funding``: the ledger calls and account names.
- ``keyops``: status changes after creation (revoke, suspend, resume, exhaustion) and
  updates; ``transitions``: the statuses, suspension reasons and changes under the lock.
- ``reads``: keys as tenants and the proxy's login read them.
- ``budget``: spend and exhaustion of a partner key; ``billing``: the terms a key is
  billed to a customer at.
- ``events``: key changes published on NATS, and the last-used consumer.
- ``servicer``: proto <-> domain, and which status code each domain error is.
- ``__main__``: the composition root.
"""
