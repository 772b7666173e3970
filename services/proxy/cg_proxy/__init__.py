"""The proxy: the OpenAI-compatible HTTP front door.

Per request (``routes``): authenticate the virtual key (``auth``, cached, keys over
gRPC), validate the body (``request_checks``), check the model, reserve an upper bound
(``tokens`` and ``token_usage`` bound it, ``ledger_client`` holds it over gRPC), forward
to the provider (``upstream`` and its ``providers``; streams through ``relay``), then
settle the real usage and publish the usage event off the client's critical path
(``usage_recorder``, with ``outbox`` and ``bus``), the usage journaled first so that a
killed process loses none (``journal``). Every failure is rendered by ``errors`` in
OpenAI's shape. The metered routes run as plain ASGI (``fastpath``), the rest through
FastAPI (``middleware`` gives both their request ids, metrics and log lines). ``app`` is
the composition root; ``collaborators`` names the interfaces it wires, which tests
replace with fakes. ``__main__`` runs ``CG_PROXY_WORKERS`` processes, each with its own
files (``slots``).
"""
