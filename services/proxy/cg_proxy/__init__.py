"""The proxy: the OpenAI-compatible HTTP front door.

Per request: authenticate the virtual key (``auth``, cached, keys over gRPC), check
the model, reserve an upper bound (``metering``, ledger over gRPC), forward to the
provider (``upstream``; streams through ``relay``), then settle the real usage and
publish the usage event off the client's critical path (``usage``). Every failure is
rendered by ``errors`` in OpenAI's shape. ``app`` is the composition root.
"""
