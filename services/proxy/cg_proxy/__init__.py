"""The proxy: the OpenAI-compatible HTTP front door.

Per request (``routes``): authenticate the virtual key (``auth``, cached, keys over
gRPC), validate the body (``request_checks``), check the model, reserve an upper bound
(``tokens`` and ``token_usage`` bound it, ``ledger_client`` holds it over gRPC), forward
to the provider (``upstream`` and its ``providers``; streams through ``relay``), then
settle the real usage and publish the usage event off the client's critical path
(``usage_recorder``, with ``outbox`` and ``bus``). Every failure is rendered by
``errors`` in OpenAI's shape. ``app`` is the composition root; ``collaborators`` names
the interfaces it wires, which tests replace with fakes.
"""
