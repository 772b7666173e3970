"""The keys service: partners, virtual keys and the model catalog, behind gRPC.

- ``settings``: configuration from ``CG_KEYS_*`` variables.
- ``catalog``: the versioned model catalog (``catalog.yaml``).
- ``models``: the tables (migrations under ``migrations/``).
- ``access``: who may touch what; ``validation`` and ``keyfields``: input checks.
- ``tenants``: partners, customers, self-service settings; ``visibility``: whether a
  customer sees AI Gateway (the three conditions).
- ``issuing``: creating keys and rotating secrets, once per idempotency key.
- ``keyops``: the lifecycle after that (revoke, suspend, resume, top-up, exhaustion,
  update) and reads; ``transitions``: status changes under the row lock.
- ``budget``: spend and exhaustion of a partner key; ``billing``: the terms a key is
  billed to a customer at; ``funding``: the ledger calls.
- ``servicer``: proto <-> domain, errors -> status codes.
- ``__main__``: the composition root.
"""
