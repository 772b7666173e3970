"""The keys service: partners, virtual keys and the model catalog, behind gRPC.

- ``settings``: configuration from ``CG_KEYS_*`` variables.
- ``catalog``: the versioned model catalog (``catalog.yaml``).
- ``models``: the tables; ``repository``: the queries.
- ``servicer``: proto <-> domain, errors -> status codes.
- ``__main__``: the composition root.
"""
