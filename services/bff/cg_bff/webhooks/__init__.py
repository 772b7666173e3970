"""Partners' webhooks (issue 12, item 5), the BFF's side.

- ``events``: the event types, by name, from the contract (bff.proto);
- ``secretbox``: signing secrets made, sealed in the database, opened for the worker;
- ``store``: the tables' queries (endpoints, events, deliveries, attempts), tenant-scoped;
- ``service``: what the routes, the event consumer and the gRPC servicer call (URL
  checks, secrets, fan-out, jobs published on NATS), built once per app (``of(state)``);
- ``schemas``: the API's request and answer bodies;
- ``servicer``: ``WebhookService`` for the worker (creditgate.bff.v1).

How a webhook travels: the worker publishes a ``WebhookEvent`` (``webhooks.events.<partner>``);
``cg_bff.background.webhook_events`` records it once and makes one delivery per subscribed,
enabled endpoint, publishing a ``WebhookJob`` each (``webhooks.jobs.<partner>``); the
worker delivers the job (asking ``WebhookService.GetDelivery`` for the URL and secrets),
reporting each attempt (``RecordAttempt``). Kept free of imports: ``settings`` reads
``secretbox``.
"""
